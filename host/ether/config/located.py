"""YAML with the line of every key, so a mistake found by pydantic is reported as ``file:line: key: reason``."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
    """A mistake in a session file, located by file, line and key."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, key: str = "") -> None:
        self.path, self.line, self.key, self.reason = path, line, key, message
        where = f"{path or '<config>'}" + (f":{line}" if line else "")
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


class Located:
    """Plain Python data from YAML plus the line of every key, addressed by key path."""

    def __init__(self, text: str, path: str | None) -> None:
        self.path, self.text = path, text
        self.lines: dict[tuple, int] = {}
        try:
            node = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(
                f"not valid YAML: {getattr(exc, 'problem', exc)}", path, mark.line + 1 if mark else None
            ) from None
        self.data = self._convert(node, ()) if node is not None else {}

    @classmethod
    def read(cls, path: str) -> Located:
        try:
            return cls(Path(path).read_text(), path)
        except OSError as exc:
            raise ConfigError(f"cannot read the file ({exc.strerror})", path) from None

    def _convert(self, node: yaml.Node, key_path: tuple) -> Any:
        self.lines[key_path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
                if key in out:
                    raise ConfigError(
                        "key appears twice",
                        self.path,
                        key_node.start_mark.line + 1,
                        dotted(key_path + (key,)),
                    )
                out[key] = self._convert(value_node, key_path + (key,))
                self.lines[key_path + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item, key_path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    @staticmethod
    def _scalar(node: yaml.Node) -> Any:
        """The Python value of a scalar node (``key:`` with nothing after it is None)."""
        if not isinstance(node, yaml.ScalarNode):
            return yaml.safe_load(yaml.serialize(node))  # a mapping or list used as a key
        return yaml.SafeLoader("").construct_object(node, deep=True)

    def error(self, message: str, *key_path: Any) -> ConfigError:
        """A ConfigError at the nearest enclosing key of ``key_path`` that the file has."""
        return ConfigError(message, self.path, self._line(key_path), dotted(key_path))

    def _line(self, key_path: tuple) -> int | None:
        for depth in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:depth]))
            if line:
                return line
        return None

    def validate(self, model: type[Model]) -> Model:
        """``model`` from the data; the first mistake pydantic finds becomes a located ConfigError."""
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise self._located(model, exc.errors()[0]) from None

    def _located(self, model: type[BaseModel], err: Any) -> ConfigError:
        loc = tuple(part for part in err["loc"] if part != "[key]")
        if err["type"] != "missing":  # a key the file does not have came from a short form (broker: URL)
            while len(loc) > 1 and loc not in self.lines:
                loc = loc[:-1]
        return self.error(_reason(model, err), *loc)


def dotted(key_path: tuple) -> str:
    return ".".join(str(k) for k in key_path)


def unknown_key(key: str, allowed: typing.Iterable[str]) -> str:
    return f"unknown key '{key}' ({hint(key, tuple(allowed))})"


def hint(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"


_PLAIN = {
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


def _reason(model: type[BaseModel], err: Any) -> str:
    """Pydantic's error in the words of a session file."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return f"missing '{err['loc'][-1]}:'"
    if kind == "extra_forbidden":
        section = _model_at(model, err["loc"][:-1])
        key = str(err["loc"][-1])
        retired = getattr(section, "retired_keys", {}).get(key)
        return f"unknown key '{key}' ({retired})" if retired else unknown_key(key, section.model_fields)
    if value is None and kind in ("model_type", "dict_type"):
        return "is empty: expected a mapping under it"
    if kind == "literal_error":
        reason = f"must be {ctx['expected']}"
    elif kind in ("greater_than", "greater_than_equal"):
        reason = f"must be {'>' if kind == 'greater_than' else '>='} {ctx.get('gt', ctx.get('ge'))}"
    else:
        reason = _PLAIN.get(kind, err["msg"])
    return f"{reason}, got {value!r}" if not isinstance(value, (dict, list)) else reason


def _model_at(model: type[BaseModel], loc: tuple) -> Any:
    """The model class that validates the value at ``loc`` (through fields, dicts, lists, optionals)."""
    annotation: Any = model
    for part in loc:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = annotation.model_fields[part].annotation
        else:
            annotation = typing.get_args(annotation)[-1]  # dict[str, X] or list[X]
        while typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation
