"""``opa``: Rego policies evaluated in-process (regorus), with OPA-Envoy's input and result shapes.

The input document is the one OPA-Envoy builds from an ext_authz check
(``attributes.request.http.{method,path,host,scheme,headers,body}``, ``attributes.source`` /
``destination``, ``parsed_path``, ``parsed_query``, ``parsed_body`` for JSON and form bodies),
plus ``attributes.metadata_context.filter_metadata`` with the namespaces of earlier filters (the
``jwt`` filter's verified ``payload`` and ``principal``). The query result is a boolean or an
object with ``allowed``, ``headers``, ``response_headers_to_add``, ``request_headers_to_remove``,
``http_status``, ``body`` and ``dynamic_metadata``.

Sidecar-only (regorus is a native library): its request hooks are ``async``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from pydantic import Field, field_validator

from envoykit import (
    BodyMode,
    ConfigError,
    FilterConfig,
    HttpFilter,
    ProcessingNeeds,
    Reply,
    Request,
    Response,
)

from ._opa.policies import PolicyError, PolicyStore

__all__ = ["Opa", "OpaConfig"]

log = logging.getLogger("envoykit.filters.opa")


class OpaConfig(FilterConfig):
    #: Directory of ``*.rego`` policies (and ``*.json`` data documents), read recursively.
    policy_dir: str = Field(min_length=1)
    #: The rule to evaluate (OPA-Envoy's default).
    query: str = Field("data.envoy.authz.allow", pattern=r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$")
    #: Always allow; log what the decision would have been.
    dry_run: bool = False
    #: Pass the request body to the policy (``body``, ``parsed_body``); buffers the body.
    with_body: bool = False
    #: Check the policy files for changes at most this often (seconds).
    reload_interval: float = Field(1.0, ge=0)
    #: Status of a denial whose result has no ``http_status``.
    deny_status: int = Field(403, ge=400, le=599)
    #: Metadata namespaces of earlier filters passed in ``attributes.metadata_context``.
    metadata_namespaces: list[str] = Field(default_factory=lambda: ["envoykit.jwt"])

    @field_validator("policy_dir")
    @classmethod
    def _is_dir(cls, value: str) -> str:
        if not Path(value).is_dir():
            raise ValueError(f"{value}: no such directory")
        return value


@dataclass
class OpaState:
    decided: bool = False
    response_headers: list[tuple[str, str]] = field(default_factory=list)


def _headers_of(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out = []
        for name, v in value.items():
            for item in v if isinstance(v, list) else [v]:
                out.append((str(name), item if isinstance(item, str) else json.dumps(item)))
        return out
    return []


def parsed_body(content_type: str, body: bytes) -> Any:
    """OPA-Envoy's ``parsed_body``: JSON, or a form as ``{name: [values]}``; else ``None``."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        if media == "application/json" or media.endswith("+json"):
            return json.loads(body) if body else None
        if media == "application/x-www-form-urlencoded":
            return parse_qs(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    return None


class Opa(HttpFilter[OpaConfig, OpaState]):
    """Authorize requests with Rego policies from a directory (hot-reloaded)."""

    name = "opa"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.policies = PolicyStore(
                Path(self.config.policy_dir), check_interval=self.config.reload_interval
            )
        except PolicyError as exc:
            raise ConfigError(f"opa: policy_dir: {exc}") from None
        self._allowed = self.metrics.counter("allowed")
        self._denied = self.metrics.counter("denied")
        self._dry_run_denied = self.metrics.counter("dry_run_denied")

    def needs(self) -> ProcessingNeeds:
        needs = super().needs()
        if not self.config.with_body:
            needs = dataclasses.replace(needs, request_body=BodyMode.NONE)
        return needs

    async def on_request_headers(self, request: Request, state: OpaState) -> Reply | None:
        if self.config.with_body and not request.end_of_stream:
            return None  # decided on the body
        return self._decide(request, state)

    async def on_request_body(self, request: Request, state: OpaState) -> Reply | None:
        return None if state.decided else self._decide(request, state)

    def on_response_headers(self, response: Response, state: OpaState) -> Reply | None:
        for name, value in state.response_headers:
            response.headers.add(name, value)
        return None

    # -- the decision ------------------------------------------------------------------------------
    def input_document(self, request: Request) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            if not name.startswith(":"):
                headers[name] = f"{headers[name]},{value}" if name in headers else value
        http: dict[str, Any] = {
            "id": request.attributes.request_id or "",
            "method": request.method,
            "path": request.path,
            "host": request.authority,
            "scheme": request.scheme,
            "headers": headers,
        }
        doc: dict[str, Any] = {
            "attributes": {
                "request": {"http": http},
                "source": {"address": {"socketAddress": {
                    "address": request.attributes.source_address or "",
                    "portValue": request.attributes.source_port or 0}}},
                "destination": {"address": {"socketAddress": {
                    "address": request.attributes.destination_address or "",
                    "portValue": request.attributes.destination_port or 0}}},
                "metadata_context": {"filter_metadata": {
                    ns: dict(request.metadata.read(ns)) for ns in self.config.metadata_namespaces
                    if request.metadata.read(ns)}},
            },
            "parsed_path": unquote(request.path_only).lstrip("/").split("/"),
            "parsed_query": parse_qs(request.query, keep_blank_values=True),
            "truncated_body": False,
        }  # fmt: skip
        if self.config.with_body:
            body = request.body
            http["body"] = body.decode("utf-8", "replace")
            doc["parsed_body"] = parsed_body(request.headers.get("content-type") or "", body)
        return doc

    def _decide(self, request: Request, state: OpaState) -> Reply | None:
        state.decided = True
        engine = self.policies.engine()
        doc = self.input_document(request)
        engine.set_input_json(json.dumps(doc))
        try:
            result = engine.eval_rule(self.config.query)
        except RuntimeError as exc:
            log.error("opa: evaluating %s failed: %s", self.config.query, exc)
            result = None  # undefined / error: deny, as OPA-Envoy does
        allowed = bool(result.get("allowed", False)) if isinstance(result, dict) else result is True
        decision = {
            "query": self.config.query,
            "allowed": allowed,
            "dry_run": self.config.dry_run,
            "method": request.method,
            "path": request.path_only,
            "request_id": request.attributes.request_id,
        }
        log.info("%s", json.dumps({"opa": decision}))
        details = result if isinstance(result, dict) else {}
        if isinstance(details.get("dynamic_metadata"), dict):
            for key, value in details["dynamic_metadata"].items():
                request.metadata[str(key)] = value
        request.metadata["allowed"] = allowed
        if not allowed and self.config.dry_run:
            self._dry_run_denied.inc()
            return None
        if not allowed:
            self._denied.inc()
            status = details.get("http_status")
            body = details.get("body", "")
            return Reply(
                status if isinstance(status, int) and 200 <= status <= 599 else self.config.deny_status,
                body if isinstance(body, str) else json.dumps(body),
                headers=_headers_of(details.get("headers")),
                details="envoykit_opa_denied",
            )
        self._allowed.inc()
        for name, value in _headers_of(details.get("headers")):
            request.headers.set(name, value)
        for name in details.get("request_headers_to_remove") or []:
            if isinstance(name, str) and not name.startswith(":"):
                request.headers.remove(name)
        state.response_headers = _headers_of(details.get("response_headers_to_add"))
        return None
