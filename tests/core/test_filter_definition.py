from dataclasses import dataclass

import pytest

from envoykit import (
    BodyMode,
    EmptyConfig,
    FilterConfig,
    FilterDefinitionError,
    HttpFilter,
    NoState,
    Phase,
    ProcessingNeeds,
    Reply,
)


class Cfg(FilterConfig):
    limit: int = 3


@dataclass
class St:
    seen: int = 0


class Typed(HttpFilter[Cfg, St]):
    def on_request_headers(self, request, state):
        return None


def test_config_and_state_are_inferred_from_generic_parameters():
    assert Typed.Config is Cfg and Typed.State is St
    f = Typed({"limit": 5})
    assert f.config.limit == 5
    assert isinstance(f.new_state(), St)
    assert f.name == "typed" and f.metadata_namespace == "envoykit.typed"


def test_defaults_without_parameters():
    class Plain(HttpFilter):
        pass

    assert Plain.Config is EmptyConfig and Plain.State is NoState
    assert Plain().needs() == ProcessingNeeds()


def test_class_name_becomes_kebab_case_name():
    class ApiKeyCheck(HttpFilter):
        pass

    assert ApiKeyCheck.name == "api-key-check"
    assert ApiKeyCheck(name="other").name == "other"


def test_misspelt_hook_is_an_error_with_a_suggestion():
    with pytest.raises(FilterDefinitionError, match="did you mean on_request_headers"):

        class Bad(HttpFilter):
            def on_request_header(self, request, state):
                return None


def test_hook_with_wrong_arity_is_an_error():
    with pytest.raises(FilterDefinitionError, match=r"must take \(self, message, state\)"):

        class Bad(HttpFilter):
            def on_request_headers(self, request):
                return None


def test_config_type_must_be_a_filter_config():
    with pytest.raises(FilterDefinitionError, match=r"must subclass envoykit\.FilterConfig"):

        class Bad(HttpFilter[dict, NoState]):  # type: ignore[type-var]
            pass


def test_invalid_config_names_the_field():
    from envoykit import ConfigError

    with pytest.raises(ConfigError, match=r"limit: Input should be a valid integer"):
        Typed({"limit": "many"})
    with pytest.raises(ConfigError, match=r"lmit: unknown field"):
        Typed({"lmit": 1})


def test_needs_follow_overridden_hooks_and_body_modes():
    class Streams(HttpFilter):
        request_body_mode = BodyMode.STREAMED

        def on_request_body(self, request, state):
            return None

        def on_response_trailers(self, response, state):
            return None

    needs = Streams().needs()
    assert needs.request_body is BodyMode.STREAMED
    assert needs.response_trailers and not needs.response_headers
    assert needs.wants(Phase.REQUEST_BODY) and not needs.wants(Phase.RESPONSE_BODY)


def test_needs_union_prefers_buffered():
    a = ProcessingNeeds(request_body=BodyMode.STREAMED)
    b = ProcessingNeeds(request_body=BodyMode.BUFFERED, response_headers=True)
    merged = a | b
    assert merged.request_body is BodyMode.BUFFERED and merged.response_headers


def test_envoy_processing_mode_mapping():
    needs = ProcessingNeeds(request_headers=True, response_body=BodyMode.STREAMED, request_trailers=True)
    assert needs.envoy_processing_mode() == {
        "request_header_mode": "SEND",
        "response_header_mode": "SEND",
        "request_body_mode": "NONE",
        "response_body_mode": "STREAMED",
        "request_trailer_mode": "SEND",
        "response_trailer_mode": "SKIP",
    }


def test_reply_validates_status_and_encodes_body():
    assert Reply(404, "gone").body == b"gone"
    with pytest.raises(ValueError, match="200-599"):
        Reply(100)
    assert Reply.json(400, {"a": 1}).body == b'{"a":1}'
