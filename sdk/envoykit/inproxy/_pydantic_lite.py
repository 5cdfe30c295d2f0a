"""A stdlib-only subset of pydantic's model API, frozen into Wasm modules as ``pydantic``.

Filter configs are pydantic models, but pydantic-core is a Rust extension with no wasm32-wasi
build, and a filter module must validate its config inside Envoy (``proxy_on_configure``) so a
bad config is rejected at load. This module implements the part of pydantic filter configs use:
``BaseModel`` with annotated fields (str, int, float, bool, bytes, Literal, Enum, X | None,
unions, list/tuple/set/frozenset/dict, nested models), ``Field`` constraints, ``ConfigDict``
(``frozen``, ``extra``), ``field_validator`` / ``model_validator``, ``model_validate``,
``model_dump`` and ``ValidationError.errors()`` with pydantic's ``loc``/``msg``/``type``.
Anything outside that subset is refused when the class is defined, naming the field, so a filter
never silently validates differently inside Envoy. ``tests/inproxy/test_pydantic_lite.py`` checks
it against real pydantic on the same inputs.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "BaseModel",
    "ConfigDict",
    "Field",
    "ValidationError",
    "field_validator",
    "model_validator",
]

_MISSING: Any = object()
_NONE_TYPE = type(None)


def ConfigDict(**settings: Any) -> dict[str, Any]:
    unsupported = set(settings) - {"frozen", "extra"}
    if unsupported:
        raise TypeError(f"ConfigDict options not supported inside Envoy: {sorted(unsupported)}")
    return dict(settings)


class _FieldInfo:
    __slots__ = ("constraints", "default", "default_factory")

    def __init__(self, default: Any, default_factory: Callable[[], Any] | None, constraints: dict[str, Any]):
        self.default = default
        self.default_factory = default_factory
        self.constraints = constraints


_CONSTRAINTS = ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern")


def Field(
    default: Any = _MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    description: str | None = None,
    **constraints: Any,
) -> Any:
    unsupported = set(constraints) - set(_CONSTRAINTS)
    if unsupported:
        raise TypeError(f"Field options not supported inside Envoy: {sorted(unsupported)}")
    if default is ... and default_factory is None:
        default = _MISSING
    return _FieldInfo(default, default_factory, constraints)


class ValidationError(ValueError):
    """Like pydantic's: ``errors()`` lists ``{"loc", "msg", "type"}`` dicts."""

    def __init__(self, title: str, errors: list[dict[str, Any]]) -> None:
        self.title = title
        self._errors = errors
        super().__init__(
            f"{len(errors)} validation error(s) for {title}\n"
            + "\n".join(f"{'.'.join(map(str, e['loc']))}\n  {e['msg']}" for e in errors)
        )

    def errors(self) -> list[dict[str, Any]]:
        return list(self._errors)


class _Invalid(Exception):
    def __init__(self, msg: str, kind: str, loc: tuple[Any, ...] = ()) -> None:
        self.items = [{"loc": loc, "msg": msg, "type": kind}]


def field_validator(*fields: str, mode: str = "after") -> Callable[[Any], Any]:
    def mark(func: Any) -> Any:
        target: Any = func.__func__ if isinstance(func, classmethod) else func
        target.__envoykit_field_validator__ = (fields, mode)
        return func

    return mark


def model_validator(*, mode: str = "after") -> Callable[[Any], Any]:
    def mark(func: Any) -> Any:
        target: Any = func.__func__ if isinstance(func, classmethod) else func
        target.__envoykit_model_validator__ = mode
        return func

    return mark


class BaseModel:
    """Subset of ``pydantic.BaseModel``; see the module docstring for what is covered."""

    model_config: typing.ClassVar[dict[str, Any]] = {}
    __envoykit_fields__: typing.ClassVar[dict[str, tuple[Any, _FieldInfo]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            config.update(base.__dict__.get("model_config", {}))
        cls.model_config = config
        hints = typing.get_type_hints(cls)  # each class's annotations in its own module
        # A base's Field(...) left its class when the base was built: inherit the field info.
        inherited: dict[str, tuple[Any, _FieldInfo]] = {}
        for base in reversed(cls.__mro__[1:]):
            inherited.update(base.__dict__.get("__envoykit_fields__", {}))
        fields: dict[str, tuple[Any, _FieldInfo]] = {}
        for name, hint in hints.items():
            if name.startswith("_") or typing.get_origin(hint) is typing.ClassVar or name == "model_config":
                continue
            if (
                name in inherited
                and name not in cls.__dict__
                and name not in cls.__annotations__  # own annotations only (3.10+)
            ):
                fields[name] = (hint, inherited[name][1])
                continue
            value = getattr(cls, name, _MISSING)
            info = value if isinstance(value, _FieldInfo) else _FieldInfo(value, None, {})
            _check_supported(cls.__qualname__, name, hint)
            fields[name] = (hint, info)
            if isinstance(value, _FieldInfo):
                delattr(cls, name) if name in cls.__dict__ else None
        cls.__envoykit_fields__ = fields
        cls.__envoykit_validators__ = [  # type: ignore[attr-defined]
            v for v in (getattr(cls, n) for n in dir(cls)) if hasattr(v, "__envoykit_field_validator__")
        ]
        #: (name, mode): "before" ones are classmethods over the input, "after" ones methods.
        cls.__envoykit_model_validators__ = [  # type: ignore[attr-defined]
            (n, getattr(cls, n).__envoykit_model_validator__)
            for n in dir(cls)
            if hasattr(getattr(cls, n, None), "__envoykit_model_validator__")
        ]

    def __init__(self, **data: Any) -> None:
        values = self._validate(data)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(
            self, "model_fields_set", frozenset(k for k in data if k in self.__envoykit_fields__)
        )
        for name, mode in self.__envoykit_model_validators__:  # type: ignore[attr-defined]
            if mode == "after":
                try:
                    getattr(self, name)()
                except (ValueError, AssertionError) as exc:
                    raise ValidationError(type(self).__name__, [_value_error((), exc)]) from None

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise ValidationError(
                cls.__name__, [_error((), "Input should be a valid dictionary", "dict_type")]
            )
        return cls(**dict(data))

    @classmethod
    def _validate(cls, data: dict[str, Any]) -> dict[str, Any]:
        errors: list[dict[str, Any]] = []
        for name, mode in cls.__envoykit_model_validators__:  # type: ignore[attr-defined]
            if mode == "before":
                data = getattr(cls, name)(data)
        if cls.model_config.get("extra") == "forbid":
            for key in data:
                if key not in cls.__envoykit_fields__:
                    errors.append(_error((key,), "Extra inputs are not permitted", "extra_forbidden"))
        values: dict[str, Any] = {}
        for name, (hint, info) in cls.__envoykit_fields__.items():
            if name in data:
                try:
                    value = _coerce(hint, data[name], (name,))
                    _constrain(value, info.constraints, (name,))
                    for validator in cls.__envoykit_validators__:  # type: ignore[attr-defined]
                        names, _mode = validator.__envoykit_field_validator__
                        if name in names:
                            value = validator(value)
                except _Invalid as exc:
                    errors.extend(exc.items)
                    continue
                except (ValueError, AssertionError) as exc:
                    errors.append(_value_error((name,), exc))
                    continue
                values[name] = value
            elif info.default_factory is not None:
                values[name] = info.default_factory()
            elif info.default is not _MISSING:
                values[name] = info.default
            else:
                errors.append(_error((name,), "Field required", "missing"))
        if errors:
            raise ValidationError(cls.__name__, errors)
        return values

    def model_dump(self) -> dict[str, Any]:
        return {name: _dump(getattr(self, name)) for name in self.__envoykit_fields__}

    def __setattr__(self, name: str, value: Any) -> None:
        if self.model_config.get("frozen"):
            raise ValidationError(
                type(self).__name__, [_error((name,), "Instance is frozen", "frozen_instance")]
            )
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BaseModel)
            and type(other) is type(self)
            and self.model_dump() == other.model_dump()
        )

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(repr(v) for v in self.model_dump().items()))))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__envoykit_fields__)
        return f"{type(self).__name__}({inner})"


def _error(loc: tuple[Any, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _value_error(loc: tuple[Any, ...], exc: BaseException) -> dict[str, Any]:
    return _error(loc, f"Value error, {exc}", "value_error")


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, (list, tuple)):
        return type(value)(_dump(v) for v in value)
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


_SCALARS: dict[Any, tuple[str, str]] = {
    str: ("Input should be a valid string", "string_type"),
    int: ("Input should be a valid integer", "int_type"),
    float: ("Input should be a valid number", "float_type"),
    bool: ("Input should be a valid boolean", "bool_type"),
    bytes: ("Input should be a valid bytes", "bytes_type"),
}
_CONTAINERS = (list, tuple, set, frozenset, dict)


def _check_supported(owner: str, name: str, hint: Any) -> None:
    origin = typing.get_origin(hint)
    if (
        hint is Any
        or hint in _SCALARS
        or (isinstance(hint, type) and issubclass(hint, (BaseModel, enum.Enum)))
    ):
        return
    if origin is typing.Literal:
        return
    if origin in (typing.Union, types.UnionType) or origin in _CONTAINERS:
        for arg in typing.get_args(hint):
            if arg is not Ellipsis and arg is not _NONE_TYPE:
                _check_supported(owner, name, arg)
        return
    raise TypeError(f"{owner}.{name}: type {hint!r} is not supported by envoykit's in-Envoy config validator")


def _coerce(hint: Any, value: Any, loc: tuple[Any, ...]) -> Any:
    """Lax-mode conversion like pydantic's for the supported types."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and _NONE_TYPE in args:
            return None
        last: _Invalid | None = None
        for arg in args:
            if arg is _NONE_TYPE:
                continue
            try:
                return _coerce(arg, value, loc)
            except _Invalid as exc:
                last = exc
        raise last or _Invalid("Input should be None", "none_required", loc)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        expected = " or ".join(repr(a) for a in allowed)
        raise _Invalid(f"Input should be {expected}", "literal_error", loc)
    if origin in _CONTAINERS:
        return _container(origin, typing.get_args(hint), value, loc)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise _Invalid(
                "Input should be a valid dictionary or instance of " + hint.__name__, "model_type", loc
            )
        try:
            return hint.model_validate(value)
        except ValidationError as exc:
            raise _Nested(exc, loc) from None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            expected = " or ".join(repr(m.value) for m in hint)
            raise _Invalid(f"Input should be {expected}", "enum", loc) from None
    return _scalar(hint, value, loc)


class _Nested(_Invalid):
    def __init__(self, exc: ValidationError, loc: tuple[Any, ...]) -> None:
        self.items = [{**e, "loc": loc + tuple(e["loc"])} for e in exc.errors()]


def _scalar(hint: Any, value: Any, loc: tuple[Any, ...]) -> Any:
    msg, kind = _SCALARS[hint]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise _Invalid(
            "Input should be a valid boolean", "bool_parsing" if isinstance(value, str) else kind, loc
        )
    if hint is int:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise _Invalid(
                "Input should be a valid integer, got a number with a fractional part", "int_from_float", loc
            )
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        parsing = isinstance(value, str)
        raise _Invalid(
            "Input should be a valid integer, unable to parse string as an integer" if parsing else msg,
            "int_parsing" if parsing else kind,
            loc,
        )
    if hint is float:
        if (isinstance(value, (int, float)) and not isinstance(value, bool)) or isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Invalid(
                    "Input should be a valid number, unable to parse string as a number", "float_parsing", loc
                ) from None
        raise _Invalid(msg, kind, loc)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Invalid(msg, kind, loc)
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise _Invalid(msg, kind, loc)


_BOOL_WORDS = {
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "on": True,
    "off": False,
    "1": True,
    "0": False,
    "t": True,
    "f": False,
    "y": True,
    "n": False,
}


def _container(origin: Any, args: tuple[Any, ...], value: Any, loc: tuple[Any, ...]) -> Any:
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Invalid("Input should be a valid dictionary", "dict_type", loc)
        key_t, value_t = args or (Any, Any)
        errors: list[dict[str, Any]] = []
        out: dict[Any, Any] = {}
        for k, v in value.items():
            try:
                out[_coerce(key_t, k, (*loc, k))] = _coerce(value_t, v, (*loc, k))
            except _Invalid as exc:
                errors.extend(exc.items)
        if errors:
            raise _Many(errors)
        return out
    names = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise _Invalid(f"Input should be a valid {names[origin]}", f"{names[origin]}_type", loc)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _Invalid(
                f"Tuple should have {len(args)} items",
                "too_short" if len(value) < len(args) else "too_long",
                loc,
            )
        item_types = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    errors = []
    items = []
    for i, (item_t, item) in enumerate(zip(item_types, value, strict=False)):
        try:
            items.append(_coerce(item_t, item, (*loc, i)))
        except _Invalid as exc:
            errors.extend(exc.items)
    if errors:
        raise _Many(errors)
    return origin(items)


class _Many(_Invalid):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items


def _constrain(value: Any, constraints: Mapping[str, Any], loc: tuple[Any, ...]) -> None:
    for key, limit in constraints.items():
        if key == "gt" and not value > limit:
            raise _Invalid(f"Input should be greater than {limit}", "greater_than", loc)
        if key == "ge" and not value >= limit:
            raise _Invalid(f"Input should be greater than or equal to {limit}", "greater_than_equal", loc)
        if key == "lt" and not value < limit:
            raise _Invalid(f"Input should be less than {limit}", "less_than", loc)
        if key == "le" and not value <= limit:
            raise _Invalid(f"Input should be less than or equal to {limit}", "less_than_equal", loc)
        if key in ("min_length", "max_length"):
            _length(value, key, limit, loc)
        if key == "pattern" and not re.search(limit, value):  # pydantic: a match anywhere
            raise _Invalid(f"String should match pattern '{limit}'", "string_pattern_mismatch", loc)


def _length(value: Any, key: str, limit: int, loc: tuple[Any, ...]) -> None:
    """pydantic's wording: strings count characters, collections count items."""
    short = key == "min_length"
    if (len(value) >= limit) if short else (len(value) <= limit):
        return
    bound = "at least" if short else "at most"
    if isinstance(value, str):
        noun = "character" if limit == 1 else "characters"
        kind = "string_too_short" if short else "string_too_long"
        raise _Invalid(f"String should have {bound} {limit} {noun}", kind, loc)
    noun = "item" if limit == 1 else "items"
    name = type(value).__name__.capitalize()
    kind = "too_short" if short else "too_long"
    raise _Invalid(f"{name} should have {bound} {limit} {noun} after validation, not {len(value)}", kind, loc)
