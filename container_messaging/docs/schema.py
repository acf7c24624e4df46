"""JSON Schemas of payload types, as the wire carries them.

The schemas describe what :class:`~container_messaging.conversion.Converter` writes and accepts: attrs classes and
dataclasses are objects whose keys are the wire keys (camelCase by default, ``conversion.json_keys``), fields without
a default are required, ``X | None`` is ``X`` or null, enums are their values, datetimes (ISO 8601), dates and UUIDs
are text, sets and tuples are arrays, mappings with text keys are objects. The dialect is JSON Schema draft 7,
AsyncAPI's Schema Object. Named classes and enums become reusable definitions (``#/components/schemas/<module.Class>``).

A type that does not travel as JSON (``bytes`` inside an object, ``Decimal``, an arbitrary class, a mapping with
non-text keys) is a :class:`~container_messaging.errors.HandlerDefinitionError` naming where it was found and the
path of the field inside the payload.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types
import typing
import uuid
from collections import deque
from collections.abc import Mapping, MutableMapping, MutableSequence, MutableSet, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, datetime
from typing import Annotated, Any, Final, Literal, TypeVar, Union, get_args, get_origin

import attrs

from container_messaging.conversion import Converter
from container_messaging.errors import HandlerDefinitionError
from container_messaging.messages import MediaType

__all__ = ["SCHEMAS_REF", "SchemaBuilder"]

#: Where the named schemas live in an AsyncAPI document.
SCHEMAS_REF: Final = "#/components/schemas/"

Schema = dict[str, Any]

_ANY: Final = (inspect.Parameter.empty, Any, object)
_MAPPINGS: Final = (dict, Mapping, MutableMapping)
_LISTS: Final = (list, Sequence, MutableSequence, deque)
_SETS: Final = (set, frozenset, AbstractSet, MutableSet)
_TEXT_FORMS: Final[Mapping[type, Schema]] = {
    # isoformat(): a naive datetime has no offset, so it is not RFC 3339's "date-time" format
    datetime: {"type": "string", "description": "ISO 8601 date and time (with its UTC offset when it has one)"},
    date: {"type": "string", "format": "date"},
    uuid.UUID: {"type": "string", "format": "uuid"},
}
_PRIMITIVES: Final[Mapping[type, str]] = {bool: "boolean", int: "integer", float: "number", str: "string"}
_JSON_VALUE_TYPES: Final[Mapping[type, str]] = {**_PRIMITIVES, type(None): "null"}
_NAME_CHARACTER: Final = re.compile(r"[^\w.\-]")


class _Unsupported(Exception):
    """A type with no JSON form, found at ``path`` inside the payload."""

    def __init__(self, reason: str, path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not get_args(tp):
        return tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp).replace("typing.", "")


def _summary(cls: type) -> str | None:
    """The first paragraph of a class's own docstring (not the one dataclasses make up, not an inherited one)."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str) or not doc.strip() or doc.startswith(f"{cls.__name__}("):
        return None
    return " ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split())


def _json_value(value: Any) -> Any:
    """A default or enum value as JSON, or ``...`` when it has no plain JSON form."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or type(value) in _PRIMITIVES:
        return value
    return ...


class SchemaBuilder:
    """Builds JSON Schemas of payload types for one document; :attr:`definitions` collects the named ones.

    ``schema(tp, where=..., camel_case=...)`` returns the schema of ``tp`` (a ``$ref`` for a class or an enum).
    ``where`` names what the type belongs to (a handler, a sending declaration) in errors. Several services of one
    document may write keys differently (``conversion.json_keys``): a class is defined once per key style.
    """

    def __init__(self) -> None:
        self.definitions: dict[str, Schema] = {}
        self._names: dict[tuple[type, bool], str] = {}
        self._converters: dict[bool, Converter] = {}

    def schema(self, tp: Any, *, where: str, camel_case: bool = True) -> Schema:
        try:
            return self._schema(tp, "$", camel_case, {})
        except _Unsupported as exc:
            raise HandlerDefinitionError(
                f"{where}: cannot describe the payload type {_type_name(tp)} as a JSON Schema: {exc.reason} "
                f"@ {exc.path}"
            ) from None

    @staticmethod
    def content_type(tp: Any) -> str:
        """The media type a payload of this type travels as: text for ``str``, raw bytes for ``bytes``, else JSON."""
        tp = _unwrap(tp)
        if tp is str:
            return MediaType.TEXT_PLAIN
        if tp is bytes:
            return MediaType.OCTET_STREAM
        return MediaType.APPLICATION_JSON

    def payload_schema(self, tp: Any, *, where: str, camel_case: bool = True) -> Schema:
        """The schema of a whole message body of type ``tp`` (raw ``bytes`` are a binary string)."""
        if _unwrap(tp) is bytes:
            return {"type": "string", "format": "binary"}
        return self.schema(tp, where=where, camel_case=camel_case)

    # -- types ---------------------------------------------------------------------------------------------------

    def _schema(self, tp: Any, path: str, camel: bool, typevars: Mapping[Any, Any]) -> Schema:
        tp = _unwrap(tp)
        if isinstance(tp, TypeVar):
            return self._schema(typevars[tp], path, camel, {}) if tp in typevars else {}
        if tp in _ANY:
            return {}
        if tp is None or tp is type(None):
            return {"type": "null"}
        if isinstance(tp, type) and tp in _PRIMITIVES:
            return {"type": _PRIMITIVES[tp]}
        if isinstance(tp, type) and tp in _TEXT_FORMS:
            return dict(_TEXT_FORMS[tp])
        origin = get_origin(tp)
        args = get_args(tp)
        if origin is Literal:
            return _enum_schema(list(args), path)
        if origin is Union or isinstance(tp, types.UnionType):
            return self._union(args, path, camel, typevars)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self._named(tp, camel, path, typevars)
        container = origin or tp
        if container in _MAPPINGS:
            return self._mapping(args, path, camel, typevars)
        if container is tuple:
            return self._tuple(args, path, camel, typevars)
        if container in _LISTS or container in _SETS:
            schema: Schema = {"type": "array"}
            if args:
                schema["items"] = self._schema(args[0], f"{path}[*]", camel, typevars)
            if container in _SETS:
                schema["uniqueItems"] = True
            return schema
        if isinstance(container, type) and (attrs.has(container) or dataclasses.is_dataclass(container)):
            if args:  # a parametrized generic class: described in place, its type variables bound
                parameters = getattr(container, "__parameters__", ())
                return self._object(container, camel, path, dict(zip(parameters, args, strict=False)))
            return self._named(container, camel, path, typevars)
        if tp is bytes:
            raise _Unsupported("bytes do not travel inside JSON (send the body as bytes, or use str)", path)
        raise _Unsupported(
            f"{_type_name(tp)} is not an attrs class, dataclass, enum, primitive, datetime, date, UUID or a "
            "collection of these, so it has no JSON form",
            path,
        )

    def _union(self, members: tuple[Any, ...], path: str, camel: bool, typevars: Mapping[Any, Any]) -> Schema:
        options: list[Schema] = []
        for member in members:
            option = self._schema(member, path, camel, typevars)
            if option == {}:
                return {}  # anything at all
            if option not in options:
                options.append(option)
        return options[0] if len(options) == 1 else {"anyOf": options}

    def _mapping(self, args: tuple[Any, ...], path: str, camel: bool, typevars: Mapping[Any, Any]) -> Schema:
        schema: Schema = {"type": "object"}
        if not args:
            return schema
        key, value = args
        key_schema = self._schema(key, f"{path}{{key}}", camel, typevars)
        if key_schema.get("type") != "string" and "$ref" not in key_schema and "enum" not in key_schema:
            raise _Unsupported(f"mapping keys must be text to travel as JSON object keys, not {_type_name(key)}", path)
        if key_schema != {"type": "string"}:
            schema["propertyNames"] = key_schema
        schema["additionalProperties"] = self._schema(value, f"{path}[*]", camel, typevars)
        return schema

    def _tuple(self, args: tuple[Any, ...], path: str, camel: bool, typevars: Mapping[Any, Any]) -> Schema:
        if not args:
            return {"type": "array"}
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": self._schema(args[0], f"{path}[*]", camel, typevars)}
        items = [self._schema(arg, f"{path}[{index}]", camel, typevars) for index, arg in enumerate(args)]
        return {"type": "array", "items": items, "minItems": len(items), "maxItems": len(items)}

    # -- named definitions ---------------------------------------------------------------------------------------

    def _named(self, cls: type, camel: bool, path: str, typevars: Mapping[Any, Any]) -> Schema:
        """A ``$ref`` to the class's definition, made on first use (a class that refers to itself works)."""
        camel = camel and not issubclass(cls, enum.Enum)  # an enum is the same whatever the key style
        name = self._names.get((cls, camel))
        if name is None:
            name = self._names[(cls, camel)] = self._free_name(cls)
            self.definitions[name] = {}  # reserved: a field of the class may refer back to it
            if issubclass(cls, enum.Enum):
                definition = _enum_schema([member.value for member in cls], path)
            else:
                definition = self._object(cls, camel, path, typevars)
            title = {"title": cls.__name__}
            summary = _summary(cls)
            self.definitions[name] = {**title, **({"description": summary} if summary else {}), **definition}
        return {"$ref": SCHEMAS_REF + name}

    def _free_name(self, cls: type) -> str:
        base = _NAME_CHARACTER.sub("_", f"{cls.__module__}.{cls.__qualname__}")
        name, number = base, 1
        while name in self.definitions:
            number += 1
            name = f"{base}_{number}"
        return name

    def _object(self, cls: type, camel: bool, path: str, typevars: Mapping[Any, Any]) -> Schema:
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:
            reason = f"cannot read the type hints of {_type_name(cls)}: {type(exc).__name__}: {exc}"
            raise _Unsupported(reason, path) from exc
        converter = self._converters.get(camel)
        if converter is None:
            converter = self._converters[camel] = Converter(camel_case=camel)
        try:
            wire = converter.wire_names(cls)
        except ValueError as exc:
            raise _Unsupported(str(exc), path) from None
        properties: Schema = {}
        required: list[str] = []
        for name, has_default, default in _fields(cls):
            key = wire.get(name, name)
            schema = self._schema(hints.get(name, Any), f"{path}.{key}", camel, typevars)
            value = _json_value(default) if has_default else ...
            if value is not ...:
                schema = {**schema, "default": value}
            properties[key] = schema
            if not has_default:
                required.append(key)
        result: Schema = {"type": "object", "properties": properties}
        if required:
            result["required"] = required
        return result


def _unwrap(tp: Any) -> Any:
    """``Annotated[T, ...]`` -> ``T``; ``NewType`` -> its base type."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif hasattr(tp, "__supertype__"):
            tp = tp.__supertype__
        else:
            return tp


def _fields(cls: type) -> list[tuple[str, bool, Any]]:
    """The (name, has a default, default) of each field the converter structures: those set by ``__init__``."""
    if attrs.has(cls):
        return [
            (field.name, field.default is not attrs.NOTHING, field.default) for field in attrs.fields(cls) if field.init
        ]
    return [
        (
            field.name,
            field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING,
            field.default,
        )
        for field in dataclasses.fields(cls)
        if field.init
    ]


def _enum_schema(values: list[Any], path: str = "$") -> Schema:
    """``enum`` (``const`` for one value) of plain JSON values, with their ``type`` when they share one."""
    for value in values:
        if type(value) not in _JSON_VALUE_TYPES:
            raise _Unsupported(f"the value {value!r} has no plain JSON form", path)
    kinds = sorted({_JSON_VALUE_TYPES[type(value)] for value in values})
    schema: Schema = {"type": kinds[0]} if len(kinds) == 1 else {}
    if len(values) == 1:
        schema["const"] = values[0]
    else:
        schema["enum"] = values
    return schema
