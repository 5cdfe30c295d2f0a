"""The in-Envoy config validator accepts and rejects exactly what pydantic does, field by field.

The same model source is loaded twice, once on real pydantic and once on envoykit's stdlib-only
subset (what a Wasm module gets), and both validate the same inputs.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from envoykit.inproxy import _pydantic_lite

SOURCE = """
from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(Base):
    name: str
    weight: int = Field(1, ge=0, le=10)


class Cfg(Base):
    greeting: str = "hello"
    count: int = Field(3, gt=0)
    ratio: float = 0.5
    enabled: bool = True
    mode: Literal["strict", "standard"] = "standard"
    color: Color = Color.RED
    prefixes: tuple[str, ...] = Field(default=("/admin",), min_length=1)
    keys: frozenset[str] = frozenset()
    headers: dict[str, str] = Field(default_factory=dict)
    inner: Inner | None = None
    items: list[Inner] = Field(default_factory=list)
    slug: str = Field("x", pattern=r"^[a-z]+$", max_length=5)
    low: int = 0
    high: int = 10

    @field_validator("greeting")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("no spaces allowed")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "Cfg":
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self
"""


def load(name: str, pydantic_module: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    saved = sys.modules.get("pydantic")
    sys.modules["pydantic"] = pydantic_module
    sys.modules[name] = module
    try:
        exec(compile(SOURCE, f"<{name}>", "exec"), module.__dict__)
    finally:
        if saved is not None:
            sys.modules["pydantic"] = saved
    return module


import pydantic as real_pydantic  # noqa: E402

REAL = load("cfg_on_pydantic", real_pydantic)
LITE = load("cfg_on_lite", _pydantic_lite)

CASES: list[dict[str, Any]] = [
    {},
    {"greeting": "hi", "count": 5, "ratio": 2, "enabled": "yes", "mode": "strict", "color": "blue"},
    {"count": "7", "ratio": "1.5", "enabled": 0, "low": 3, "high": 3},
    {"prefixes": ["/a", "/b"], "keys": ["k1", "k2", "k1"], "headers": {"x-a": "1"}},
    {"inner": {"name": "n", "weight": 10}, "items": [{"name": "a"}, {"name": "b", "weight": 0}]},
    {"slug": "abcde"},
    # rejected:
    {"greeting": "two words"},
    {"count": 0},
    {"count": "many"},
    {"count": 1.5},
    {"ratio": "fast"},
    {"enabled": "perhaps"},
    {"mode": "loose"},
    {"color": "green"},
    {"prefixes": []},
    {"prefixes": "/admin"},
    {"keys": [1]},
    {"headers": {"x-a": 1}},
    {"headers": ["x"]},
    {"inner": {"weight": 11}},
    {"inner": "name"},
    {"items": [{"name": "a"}, {"name": 5, "extra": 1}]},
    {"slug": "ABC"},
    {"slug": "abcdefgh"},
    {"typo": 1},
    {"low": 5, "high": 1},
    {"greeting": 5, "count": -1, "bogus": True},
]


def outcome(module: types.ModuleType, data: dict[str, Any]) -> tuple[str, Any]:
    errors_type = real_pydantic.ValidationError if module is REAL else _pydantic_lite.ValidationError
    try:
        model = module.Cfg.model_validate(data)
    except errors_type as exc:
        return "rejected", sorted((tuple(e["loc"]), e["type"]) for e in exc.errors())
    dumped = model.model_dump()
    dumped["color"] = dumped["color"].value
    if dumped["inner"] is not None:
        dumped["inner"] = dict(dumped["inner"])
    dumped["items"] = [dict(i) for i in dumped["items"]]
    dumped["keys"] = sorted(dumped["keys"])
    return "accepted", dumped


@pytest.mark.parametrize("data", CASES, ids=[str(i) for i in range(len(CASES))])
def test_same_verdict_fields_and_values_as_pydantic(data):
    assert outcome(LITE, data) == outcome(REAL, data)


def test_error_messages_match_for_common_mistakes():
    def messages(module: types.ModuleType, data: dict[str, Any]) -> list[str]:
        errors_type = real_pydantic.ValidationError if module is REAL else _pydantic_lite.ValidationError
        with pytest.raises(errors_type) as info:
            module.Cfg.model_validate(data)
        return sorted(e["msg"] for e in info.value.errors())

    for data in (
        {"count": 0},
        {"typo": 1},
        {"prefixes": []},
        {"mode": "loose"},
        {"count": "x"},
        {"greeting": "a b"},
    ):
        assert messages(LITE, data) == messages(REAL, data), data


def test_frozen_models_refuse_assignment():
    model = LITE.Cfg.model_validate({})
    with pytest.raises(_pydantic_lite.ValidationError):
        model.count = 5


def test_unsupported_types_are_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="not supported by envoykit's in-Envoy config validator"):

        class Bad(_pydantic_lite.BaseModel):
            when: complex

    with pytest.raises(TypeError, match="not supported inside Envoy"):
        _pydantic_lite.Field(1, multiple_of=2)


def test_subclass_inherits_field_defaults_and_constraints():
    # A base's Field(...) must keep its default and bounds in subclasses (pydantic does).
    class Policy(_pydantic_lite.BaseModel):
        max_age: int | None = _pydantic_lite.Field(None, ge=0)
        names: tuple[str, ...] = _pydantic_lite.Field(default=("a",), min_length=1)

    class Route(Policy):
        match: str

    class Redefined(Policy):
        max_age: int = 5

    route = Route(match="/x")
    assert route.max_age is None and route.names == ("a",)
    with pytest.raises(_pydantic_lite.ValidationError, match="greater than or equal to 0"):
        Route(match="/x", max_age=-1)
    with pytest.raises(_pydantic_lite.ValidationError, match="at least 1 item"):
        Route(match="/x", names=[])
    assert Redefined().max_age == 5
