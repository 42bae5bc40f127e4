"""Signature schema: the pydantic model of a method's arguments and return value, built once per method."""

from __future__ import annotations

import inspect
import reprlib
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pydantic
import pydantic_core
from pydantic import ConfigDict, TypeAdapter
from pydantic_core import core_schema

from ether.contract import arrays
from ether.contract.wire import ROOT_KEY


class ArgumentError(ValueError):
    """A payload that does not fit a method's signature; the message names each bad field."""


def describe(error: pydantic.ValidationError) -> str:
    """One line per bad field: ``field 'data': Input should be a valid integer (got 'abc')``."""
    lines = []
    for e in error.errors(include_url=False):
        where = ".".join(str(p) for p in e.get("loc", ())) or "(whole payload)"
        got = e.get("input")
        shown = "" if e.get("type") == "missing" else f" (got {_short(got)})"
        lines.append(f"field '{where}': {e.get('msg')}{shown}")
    return "; ".join(lines)


def _short(value: Any) -> str:
    """A bad input as an error shows it: an array or long bytes by what it is, not its contents."""
    np = arrays.numpy_if_loaded()
    if np is not None and isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    if isinstance(value, (bytes, bytearray)) and len(value) > 40:
        return f"{len(value)} bytes"
    return repr(value)


@dataclass(frozen=True)
class Array:
    """A numpy array argument or result, optionally of one dtype and shape:
    ``Annotated[np.ndarray, ether.Array(dtype="int16", shape=(32, None))]`` (``None``: any size).

    A plain ``np.ndarray`` annotation means ``Array()``. A JSON list (from a client that sends no
    arrays) is converted with ``np.asarray``."""

    dtype: str | None = None
    shape: tuple[int | None, ...] | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)

    def validate(self, value: Any) -> Any:
        import numpy as np

        if not isinstance(value, np.ndarray):
            if not isinstance(value, (list, tuple, int, float, complex)):
                raise ValueError(f"expected an array, got {type(value).__name__}")
            try:
                listed = np.asarray(value)
                value = listed if self.dtype is None else listed.astype(self.dtype)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"expected an array, got a list that is not one ({exc})") from None
            if listed.dtype.kind == "O":
                raise ValueError("expected an array, got a ragged or mixed list")
            if value is not listed and not np.array_equal(value, listed):
                raise ValueError(f"expected dtype {value.dtype}, got values that do not fit it")
        if self.dtype is not None and value.dtype != np.dtype(self.dtype):
            raise ValueError(f"expected dtype {np.dtype(self.dtype)}, got dtype {value.dtype}")
        if self.shape is not None and (
            len(value.shape) != len(self.shape)
            or any(
                want is not None and want != got for want, got in zip(self.shape, value.shape, strict=True)
            )
        ):
            want = "(" + ", ".join("any" if n is None else str(n) for n in self.shape) + ")"
            raise ValueError(f"expected shape {want}, got shape {value.shape}")
        return value


def with_arrays(annotation: Any) -> Any:
    """The annotation with every bare ``np.ndarray`` in it (also inside ``dict[str, np.ndarray]``,
    ``list[...]``, ``Optional[...]``) validated by :class:`Array`."""
    np = arrays.numpy_if_loaded()  # an np.ndarray annotation means the user's module imported numpy
    if np is None:
        return annotation
    if annotation is np.ndarray:
        return Annotated[np.ndarray, Array()]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if not args or origin is Annotated or origin is typing.Literal:
        return annotation
    new = tuple(with_arrays(a) for a in args)
    if new == args:
        return annotation
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return typing.Union[new]  # noqa: UP007 (rebuilding a Union from its parts)
    return annotation.copy_with(new) if hasattr(annotation, "copy_with") else origin[new]


_PREVIEW = reprlib.Repr()  # a refused payload in an error: its start, not 16 MiB of it
_PREVIEW.maxstring = _PREVIEW.maxother = 80


class MethodSchema:
    """Validates a payload into keyword arguments, and a return value into a publishable payload."""

    def __init__(self, func: Callable, *, forbid_extra: bool = False) -> None:
        self.name = func.__qualname__
        signature = inspect.signature(func)
        try:
            hints = typing.get_type_hints(inspect.unwrap(func), include_extras=True)
        except Exception:  # unresolvable forward references: fall back to the raw annotations
            hints = {}
        params = [
            p
            for p in list(signature.parameters.values())[1:]  # drop self
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        self.accepts_extra = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        self.parameters = [p.name for p in params]
        self.takes_root = ROOT_KEY in self.parameters

        def annotation(p: inspect.Parameter) -> Any:
            if p.annotation is inspect.Parameter.empty:
                return Any
            return with_arrays(hints.get(p.name, p.annotation))

        extra: Literal["allow", "forbid", "ignore"] = (
            "allow" if self.accepts_extra else ("forbid" if forbid_extra else "ignore")
        )
        fields: dict[str, Any] = {
            p.name: (annotation(p), ... if p.default is inspect.Parameter.empty else p.default)
            for p in params
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # field names that shadow BaseModel attributes are fine here
            self.args_model = pydantic.create_model(
                f"{self.name}.arguments",
                __config__=ConfigDict(extra=extra, arbitrary_types_allowed=True),
                **fields,
            )
        returns = hints.get("return", signature.return_annotation)
        self.returns: TypeAdapter | None = None
        if returns is not inspect.Signature.empty:
            self.returns = TypeAdapter(type(None) if returns is None else with_arrays(returns))

    def arguments(self, payload: Any) -> dict[str, Any]:
        """Keyword arguments for a call, from a message payload. Raises ArgumentError naming the fields."""
        if self.takes_root:  # `root` receives the whole payload, whatever its shape
            if isinstance(payload, dict) and set(payload) == {ROOT_KEY}:
                payload = payload[ROOT_KEY]
            payload = {ROOT_KEY: payload}
        elif not isinstance(payload, dict):
            expected = ", ".join(self.parameters) or "no fields"
            got = (
                f"{len(payload)} bytes of invalid JSON (nor Ether's binary encoding; a parameter"
                " named root receives them)"
                if isinstance(payload, bytes)
                else type(payload).__name__
            )
            raise ArgumentError(
                f"expected a JSON object with fields ({expected}), got {got} {_PREVIEW.repr(payload)}"
            )
        try:
            model = self.args_model.model_validate(payload)
        except pydantic.ValidationError as exc:
            raise ArgumentError(describe(exc)) from None
        kwargs = {name: getattr(model, name) for name in self.parameters}
        if self.accepts_extra and model.model_extra:
            kwargs.update(model.model_extra)
        return kwargs

    def argument_types(self) -> dict[str, dict[str, Any]]:
        """Each argument's type as a short name and whether it is required: what a call form needs."""
        return {
            name: {"type": _type_name(info.annotation), "required": info.is_required()}
            for name, info in self.args_model.model_fields.items()
        }

    def result(self, value: Any) -> Any:
        """The payload to publish for a return value: validated, JSON-ready; ``None`` becomes ``{}``."""
        if self.returns is not None:
            try:
                value = self.returns.validate_python(value)
            except pydantic.ValidationError as exc:
                raise ArgumentError(f"return value does not match the annotation: {describe(exc)}") from None
        if value is None:
            return {}
        if isinstance(value, (dict, list, str, int, float, bool)) or arrays.holds_binary(value):
            return value
        return pydantic_core.to_jsonable_python(value)  # models, dataclasses, dates -> JSON types


def _type_name(annotation: Any) -> str:
    """``int``, ``list[float]``, ``any``: a type as a person would write it."""
    if annotation is Any or annotation is None:
        return "any"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
