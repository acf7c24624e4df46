"""Payload conversion: wire bytes <-> Python objects, with strict types and errors that name every bad field.

One :class:`Converter` belongs to one messaging container; it owns its own ``cattrs.Converter`` and shares no
state with any other ``Converter`` in the process.

* :meth:`Converter.plan` runs once per handler at boot. It inspects the handler's payload type and fetches the
  cattrs structure hook; the :class:`PayloadPlan` it returns only decodes and structures on every message.
* :meth:`Converter.to_wire` serializes an outgoing payload; :meth:`Converter.decode` parses incoming bytes.
  Only ``application/json``, ``text/plain`` and ``application/octet-stream`` cross the wire. pickle, YAML,
  msgpack, PHP or Java serialized bodies are refused and never decoded.

Types are checked, not coerced: ``"3"`` is not an ``int``, ``2.9`` is not an ``int``, ``true`` is not an
``int``, ``1`` is not a ``str``; an ``int`` is accepted for a ``float``. The *lenient scalars* mode
(``Converter(lenient_scalars=True)``, ``conversion.scalars: lenient``) coerces scalars the way a PHP service's
serializer does, for interoperability: a number for a ``str`` field (``77`` -> ``"77"``), whole-number text or a
whole float for an ``int`` (``"77"``, ``77.0``), number text for a ``float``, and ``0``/``1``/``"true"``/
``"false"``/``"1"``/``"0"`` for a ``bool``. JSON keys are camelCase by default (``person_id`` <-> ``personId``),
in nested classes too. In-process dicts given for a class use the same keys as the wire.

Type names (the ``__TypeId__`` header): a message class is known on the wire by ``module.QualifiedName``, or by the
name it declares with :func:`type_name` (``@type_name("App\\Billing\\ChangeBillingDetails")``, the name another
service knows it by). A plan for a base class or a union chooses the class to build from an incoming ``__TypeId__``:
the target, a member of the union or any of their subclasses (attrs classes or dataclasses) known by that name.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import uuid
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, MutableSet, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any, Final, Literal, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    StructureHandlerNotFoundError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import ConversionError, HandlerDefinitionError, UnsupportedMediaTypeError
from .messages import MediaType

__all__ = ["Converter", "PayloadPlan", "check_wire_media_type", "type_name"]

_T = TypeVar("_T", bound=type)

#: The class attribute :func:`type_name` sets (read from the class's own ``__dict__``: a subclass is not its base).
TYPE_NAME_ATTR: Final = "__container_messaging_type_name__"
_CHOICES_CACHED: Final = 256

_JSON: Final = MediaType.APPLICATION_JSON
_TEXT: Final = MediaType.TEXT_PLAIN
_OCTET: Final = MediaType.OCTET_STREAM
_PYOBJ: Final = MediaType.PYTHON_OBJECT
#: content types that are already in base form: the hot path skips parsing them
_BASE_FORMS: Final = frozenset({_JSON, _TEXT, _OCTET, _PYOBJ})

#: content types whose decoding could run code or build arbitrary objects: never decoded, whatever the target
_UNSAFE: Final = frozenset(
    {
        "application/x-python-serialize",
        "application/x-pickle",
        "application/python-pickle",
        "application/pickle",
        "application/x-yaml",
        "application/yaml",
        "text/yaml",
        "text/x-yaml",
        "application/x-msgpack",
        "application/msgpack",
        "application/vnd.msgpack",
        "application/x-php",
        "application/x-php-serialized",
        "application/vnd.php.serialized",
        "application/x-java-serialized-object",
        "application/x-marshal",
    }
)
_UNSAFE_MARKERS: Final = ("pickle", "yaml", "msgpack", "serialize", "marshal")

_ANY_TARGETS: Final = (inspect.Parameter.empty, Any, object)
_MAPPING_ORIGINS: Final = (dict, Mapping, MutableMapping)
_LIST_ORIGINS: Final = (list, Sequence, MutableSequence)
_SET_ORIGINS: Final = (set, MutableSet)
_FROZENSET_ORIGINS: Final = (frozenset, AbstractSet)
_PRIMITIVES: Final = (int, float, str, bool)
_NONE_TYPE: Final = type(None)
_ENUM_VALUES_SHOWN: Final = 10


# --------------------------------------------------------------------------------------------- strict hooks


class _Mismatch(TypeError):
    """A value of the wrong JSON type or shape, raised by the strict hooks; ``description`` is the error text."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def _expected(label: str) -> _Mismatch:
    return _Mismatch(f"invalid value for type, expected {label}")


def _structure_int(value: Any, _: Any) -> Any:
    if value.__class__ is int or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _expected("int")


def _structure_float(value: Any, _: Any) -> Any:
    if value.__class__ is float:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _expected("float")


def _structure_str(value: Any, _: Any) -> Any:
    if isinstance(value, str):
        return value
    raise _expected("str")


def _structure_bool(value: Any, _: Any) -> Any:
    if value is True or value is False:
        return value
    raise _expected("bool")


# Lenient scalars (``conversion.scalars: lenient``): what a PHP service's serializer coerces.

_WHOLE_NUMBER_TEXT: Final = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLEAN_TEXT: Final = {"true": True, "false": False, "1": True, "0": False}


def _lenient_int(value: Any, _: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _WHOLE_NUMBER_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _expected("int (lenient scalars: or a whole number as text)")


def _lenient_float(value: Any, _: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value.strip())
    raise _expected("float (lenient scalars: or a number as text)")


def _lenient_str(value: Any, _: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _expected("str (lenient scalars: or a number)")


def _lenient_bool(value: Any, _: Any) -> Any:
    if value is True or value is False:
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEAN_TEXT:
        return _BOOLEAN_TEXT[value.strip().lower()]
    raise _expected("bool (lenient scalars: or 0, 1, 'true', 'false', '1', '0')")


_STRICT_SCALARS: Final = {int: _structure_int, float: _structure_float, str: _structure_str, bool: _structure_bool}
_LENIENT_SCALARS: Final = {int: _lenient_int, float: _lenient_float, str: _lenient_str, bool: _lenient_bool}


def _structure_datetime(value: Any, _: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise _expected("datetime (ISO 8601 text)")


def _structure_date(value: Any, _: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _expected("date (ISO 8601 text)")


def _structure_uuid(value: Any, _: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise _expected("UUID (text)")


def _unserializable(value: Any) -> Any:
    """``json.dumps(default=...)``: name the type that cannot be serialized."""
    cls = type(value)
    raise TypeError(f"{cls.__module__}.{cls.__qualname__} is not JSON serializable")


def _camel(name: str) -> str:
    """``person_id`` -> ``personId``; leading underscores are kept."""
    stripped = name.lstrip("_")
    head, *rest = stripped.split("_")
    return name[: len(name) - len(stripped)] + head + "".join(part[:1].upper() + part[1:] for part in rest)


def _is_structured_class(tp: Any) -> bool:
    """An attrs class or a dataclass, plain or parametrized (``Box[int]``)."""
    cls = get_origin(tp) or tp
    return isinstance(cls, type) and (attrs.has(cls) or dataclasses.is_dataclass(cls))


def _is_bare(tp: Any) -> bool:
    return all(arg is Any for arg in get_args(tp))


def _is_sequence_form(tp: Any) -> bool:
    origin = get_origin(tp) or tp
    if origin is tuple:
        args = get_args(tp)
        return not args or (len(args) == 2 and args[1] is Ellipsis)
    return origin in _LIST_ORIGINS or origin in _SET_ORIGINS or origin in _FROZENSET_ORIGINS or origin is deque


def _is_mapping_form(tp: Any) -> bool:
    return (get_origin(tp) or tp) in _MAPPING_ORIGINS


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Enum)


def _is_primitive_union(tp: Any) -> bool:
    """A union with at least one member the strict union hook checks itself (a primitive, None or a Literal)."""
    if get_origin(tp) is not Union and type(tp).__name__ != "UnionType":
        return False
    return any(arg in _PRIMITIVES or arg is _NONE_TYPE or get_origin(arg) is Literal for arg in get_args(tp))


def _label(tp: Any) -> str:
    """A short name for a type in field errors: ``int``, ``Customer``, ``list[int]``."""
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return repr(tp).replace("typing.", "")


def _describe_target(tp: Any) -> str:
    """The target named in a conversion error: ``billing.ChangeBillingDetails``, ``int``, ``list[int]``."""
    if isinstance(tp, type) and not get_args(tp):
        return tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    if tp is inspect.Parameter.empty:
        return "Any"
    return repr(tp).replace("typing.", "")


def _describe_error(exc: BaseException, tp: Any) -> str:
    """One leaf error, in cattrs' ``transform_error`` wording."""
    if isinstance(exc, _Mismatch):
        return exc.description
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"extra fields found ({', '.join(sorted(map(str, exc.extra_fields)))})"
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, AttributeError) and "has no attribute 'items'" in str(exc):
        return "expected an object"
    if tp is not None and isinstance(exc, (TypeError, ValueError)):
        return f"invalid value for type, expected {_label(tp)} ({exc})"
    return f"invalid value ({exc})" if str(exc) else f"invalid value ({type(exc).__name__})"


# --------------------------------------------------------------------------------------------- wire decoding


def _text_of(body: Any, ct: str) -> str:
    """The body as text: bytes are decoded as UTF-8 (strictly), text is returned as is."""
    if isinstance(body, str):
        return body
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConversionError(f"cannot decode {ct} payload", (f"invalid UTF-8: {exc}",)) from None
    raise ConversionError(f"cannot decode {ct} payload", (f"expected bytes or str, got {type(body).__qualname__}",))


def _bytes_of(body: Any, ct: str) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConversionError(f"cannot decode {ct} payload", (f"invalid text: {exc}",)) from None
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise ConversionError(f"cannot decode {ct} payload", (f"expected bytes or str, got {type(body).__qualname__}",))


def _load_json(body: Any, ct: str) -> Any:
    """Parse a JSON body (UTF-8 bytes or text); ``ct`` is named in the error."""
    text = _text_of(body, ct)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        detail = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
    except (ValueError, RecursionError) as exc:  # too many digits, nested too deeply
        detail = f"invalid JSON: {exc}"
    raise ConversionError(f"cannot decode {ct} payload", (detail,))


def _refuse(ct: str, content_type: str) -> UnsupportedMediaTypeError:
    shown = content_type.strip() or "(none)"
    if ct in _UNSAFE or any(marker in ct for marker in _UNSAFE_MARKERS):
        return UnsupportedMediaTypeError(
            f"content type {shown!r} is refused for safety: decoding it could run code or build arbitrary "
            f"objects; send {_JSON}, {_TEXT} or {_OCTET}"
        )
    return UnsupportedMediaTypeError(f"unsupported content type {shown!r}; supported: {_JSON}, {_TEXT}, {_OCTET}")


def _base(content_type: str) -> str:
    return content_type if content_type in _BASE_FORMS else MediaType.base(content_type)


def check_wire_media_type(content_type: str) -> None:
    """Raises :class:`UnsupportedMediaTypeError` unless a consumer accepts ``content_type`` off the wire: one of
    :data:`MediaType.WIRE <container_messaging.messages.MediaType.WIRE>`, with or without parameters
    (``application/json; charset=utf-8``). The same list every handler's plan checks on the receiving side."""
    ct = _base(content_type)
    if ct not in MediaType.WIRE:
        raise _refuse(ct, content_type)


# --------------------------------------------------------------------------------------------- type names


def type_name(name: str) -> Callable[[_T], _T]:
    """Declares the name other services know a message class by, for the ``__TypeId__`` header (both ways):

    .. code-block:: python

        @type_name("App\\Billing\\ChangeBillingDetails")
        @attrs.frozen
        class ChangeBillingDetails: ...

    ``convert_and_send_command`` then sends that name, and a handler whose payload parameter is a base class or a
    union builds this class from a message carrying it. It only attaches the name; a subclass does not inherit it.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise HandlerDefinitionError(f"@type_name needs a non-empty name without surrounding spaces, got {name!r}")

    def apply(cls: _T) -> _T:
        if not isinstance(cls, type):
            raise HandlerDefinitionError(f"@type_name({name!r}) must decorate a class, got {cls!r}")
        setattr(cls, TYPE_NAME_ATTR, name)
        return cls

    return apply


def _declared_type_name(cls: type) -> str | None:
    declared = cls.__dict__.get(TYPE_NAME_ATTR)
    return declared if isinstance(declared, str) else None


def _is_union(tp: Any) -> bool:
    return get_origin(tp) is Union or isinstance(tp, types.UnionType)


def _family(roots: tuple[type, ...]) -> list[type]:
    """The attrs classes and dataclasses among ``roots`` and all their subclasses, each once, in a stable order."""
    found: list[type] = []
    pending = list(roots)
    while pending:
        cls = pending.pop(0)
        if cls in found:
            continue
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if _is_structured_class(cls)]


# --------------------------------------------------------------------------------------------- the plan


_Convert = Callable[[Any, str], Any]


class PayloadPlan:
    """Converts one message payload to one target type; built once by :meth:`Converter.plan`.

    ``plan(payload, content_type, type_id=None)`` returns the converted payload or raises :class:`ConversionError`
    (:class:`UnsupportedMediaTypeError` for a content type that is unknown or refused). ``type_id``, the message's
    ``__TypeId__``, chooses the class to build when the target is a base class or a union (see :func:`type_name`).
    """

    __slots__ = ("_choose", "_convert", "target")

    def __init__(self, target: Any, convert: _Convert, choose: Callable[[str], _Convert] | None = None) -> None:
        self.target = target
        self._convert = convert
        self._choose = choose

    def __call__(self, payload: Any, content_type: str, type_id: Any = None) -> Any:
        if type_id is not None and self._choose is not None and isinstance(type_id, str):
            return self._choose(type_id)(payload, content_type)
        return self._convert(payload, content_type)

    def __repr__(self) -> str:
        return f"PayloadPlan({_describe_target(self.target)})"


class Converter:
    """Converts payloads for one messaging container (see the module documentation)."""

    def __init__(
        self, *, camel_case: bool = True, forbid_unknown_keys: bool = False, lenient_scalars: bool = False
    ) -> None:
        self.camel_case = camel_case
        self.forbid_unknown_keys = forbid_unknown_keys
        self.lenient_scalars = lenient_scalars
        self._scalars = _LENIENT_SCALARS if lenient_scalars else _STRICT_SCALARS
        #: attribute name -> wire key, per attrs class / dataclass (filled when its hooks are generated)
        self._wire_names: dict[type, dict[str, str]] = {}
        self._plans: dict[Any, PayloadPlan] = {}
        c = cattrs.Converter(
            detailed_validation=True,
            forbid_extra_keys=forbid_unknown_keys,
            unstruct_collection_overrides={AbstractSet: list},
        )
        for cls, hook in (
            *self._scalars.items(),
            (datetime, _structure_datetime),
            (date, _structure_date),
            (uuid.UUID, _structure_uuid),
        ):
            c.register_structure_hook(cls, hook)
        c.register_unstructure_hook(datetime, datetime.isoformat)
        c.register_unstructure_hook(date, date.isoformat)
        c.register_unstructure_hook(uuid.UUID, str)
        c.register_structure_hook_factory(_is_enum, self._enum_hook)
        c.register_structure_hook_factory(_is_primitive_union, self._union_hook)
        c.register_structure_hook_factory(_is_sequence_form, self._sequence_hook)
        c.register_structure_hook_factory(_is_mapping_form, self._mapping_hook)
        c.register_structure_hook_factory(_is_structured_class, self._class_structure_hook)
        c.register_unstructure_hook_factory(_is_structured_class, self._class_unstructure_hook)
        self._cattrs = c

    # ------------------------------------------------------------------------------------------ public API

    def plan(self, target: Any) -> PayloadPlan:
        """The conversion of payloads to ``target`` (a handler's payload annotation), prepared once."""
        try:
            cached = self._plans.get(target)
        except TypeError:  # an unhashable annotation: plan it without caching
            return self._build_plan(target)
        if cached is None:
            cached = self._plans[target] = self._build_plan(target)
        return cached

    def to_python(self, payload: Any, content_type: str, target: Any) -> Any:
        """``plan(target)(payload, content_type)``."""
        return self.plan(target)(payload, content_type)

    def to_wire(self, obj: Any, media_type: str = _JSON) -> tuple[bytes, str]:
        """Serialize ``obj`` for sending: ``(body, content_type)``."""
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj), media_type
        ct = MediaType.base(media_type)
        problem = f"cannot serialize {self.type_name(obj)} as {ct}"
        if ct == _JSON:
            try:
                data = self._cattrs.unstructure(obj)
                text = json.dumps(
                    data, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_unserializable
                )
                return text.encode("utf-8"), media_type
            except (TypeError, ValueError, RecursionError) as exc:
                raise ConversionError(problem, (str(exc),)) from exc
        if ct == _TEXT:
            if not isinstance(obj, str):
                raise ConversionError(problem, (f"{_TEXT} needs a str payload",))
            try:
                return obj.encode("utf-8"), media_type
            except UnicodeEncodeError as exc:
                raise ConversionError(problem, (str(exc),)) from exc
        if ct == _OCTET:
            raise ConversionError(problem, (f"{_OCTET} needs a bytes payload",))
        raise _refuse(ct, media_type)

    def decode(self, body: bytes | str, content_type: str) -> Any:
        """Wire body -> Python: JSON -> its value, text/plain -> str, application/octet-stream -> bytes."""
        ct = _base(content_type)
        if ct == _JSON:
            return _load_json(body, ct)
        if ct == _TEXT:
            return _text_of(body, ct)
        if ct == _OCTET:
            return _bytes_of(body, ct)
        raise _refuse(ct, content_type)

    def unstructure(self, obj: Any) -> Any:
        """attrs / dataclass instances (and containers of them) -> JSON-ready data with wire key names."""
        try:
            return self._cattrs.unstructure(obj)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConversionError(f"cannot unstructure {self.type_name(obj)}", (str(exc),)) from exc

    def wire_names(self, cls: type) -> Mapping[str, str]:
        """Attribute name -> JSON key of an attrs class or dataclass, as this converter writes and reads them."""
        return dict(self._wire_names_of(cls))

    def type_name(self, obj: Any) -> str:
        """The ``__TypeId__`` of ``obj``'s class (of ``obj`` itself when it is a class): the name it declares with
        :func:`type_name`, else ``module.QualName``."""
        cls = obj if isinstance(obj, type) else type(obj)
        return _declared_type_name(cls) or f"{cls.__module__}.{cls.__qualname__}"

    # ------------------------------------------------------------------------------------------ planning

    def _build_plan(self, target: Any) -> PayloadPlan:
        if get_origin(target) is Annotated:
            return PayloadPlan(target, self._build_plan(get_args(target)[0])._convert)
        if isinstance(target, str):
            raise ConversionError(
                f"cannot plan a conversion to the unresolved annotation {target!r}",
                ("resolve the handler's annotations (typing.get_type_hints) before planning",),
            )
        if target in _ANY_TARGETS:
            return PayloadPlan(target, self._plan_any())
        if target is str:
            return PayloadPlan(target, self._plan_str())
        if target is bytes:
            return PayloadPlan(target, self._plan_bytes())
        roots, family = self._polymorphic_family(target)
        try:
            hook = self._cattrs.get_structure_hook(target)
        except StructureHandlerNotFoundError as exc:
            if family:  # a plain base class (or a union) of message classes: the type name picks one
                return PayloadPlan(target, self._plan_unnamed(target, family), self._chooser(target, roots, None))
            raise ConversionError(
                f"no conversion to {_describe_target(target)}",
                (
                    "it is not an attrs class or dataclass and no converter knows it; use an attrs class or "
                    "dataclass, a primitive, a collection of those, or annotate the parameter with dict, str or bytes",
                ),
            ) from exc
        except Exception as exc:
            if family:
                return PayloadPlan(target, self._plan_unnamed(target, family), self._chooser(target, roots, None))
            raise ConversionError(f"no conversion to {_describe_target(target)}", (str(exc),)) from exc
        if _is_structured_class(target):
            convert = self._plan_class(target, hook)
        elif _is_mapping_form(target) or _is_sequence_form(target):
            convert = self._plan_collection(target, hook)
        else:
            convert = self._plan_other(target, hook)
        return PayloadPlan(target, convert, self._chooser(target, roots, convert) if family else None)

    # ------------------------------------------------------------------------------------------ type names

    def _polymorphic_family(self, target: Any) -> tuple[tuple[type, ...], list[type]]:
        """The message classes a ``__TypeId__`` may choose for ``target``: a class and its subclasses, or the members
        of a union and theirs (attrs classes and dataclasses); none for any other target. Returns the roots too (the
        class, or the union's members), from which later subclasses are found."""
        candidates = get_args(target) if _is_union(target) else (target,)
        roots = tuple(
            tp for tp in candidates if isinstance(tp, type) and tp.__module__ != "builtins" and not issubclass(tp, Enum)
        )
        family = _family(roots)
        declared: dict[str, type] = {}
        for cls in family:
            name = _declared_type_name(cls)
            if name is not None and declared.setdefault(name, cls) is not cls:
                clash = f"{_describe_target(declared[name])} and {_describe_target(cls)}"
                raise ConversionError(
                    f"no conversion to {_describe_target(target)}", (f"{clash} both declare type name {name!r}",)
                )
        return roots, family

    def _chooser(self, target: Any, roots: tuple[type, ...], default: _Convert | None) -> Callable[[str], _Convert]:
        """For a message's ``__TypeId__``: the conversion to the class of the family of ``roots`` known by that name
        (looked up once per name, among the classes that exist then), or ``default`` (the target's own conversion)."""
        chosen: dict[str, _Convert] = {}

        def choose(type_id: str) -> _Convert:
            try:
                return chosen[type_id]
            except KeyError:
                pass
            candidates = _family(roots)  # subclasses defined since boot count too
            match = next((cls for cls in candidates if self.type_name(cls) == type_id), None)
            if match is not None and match is not target:
                convert = self.plan(match)._convert
            elif default is not None:
                convert = default
            else:
                convert = self._plan_unnamed(target, candidates, type_id)
            if len(chosen) >= _CHOICES_CACHED:
                chosen.clear()
            chosen[type_id] = convert
            return convert

        return choose

    def _plan_unnamed(self, target: Any, family: list[type], type_id: str | None = None) -> _Convert:
        """A target that cannot be built itself (a plain base class, a union no field tells apart) without a
        ``__TypeId__`` naming one of ``family``: in process, an instance of the target; else an error."""
        known = ", ".join(repr(self.type_name(cls)) for cls in family)
        problem = (
            f"the message's __TypeId__ {type_id!r} names none of its classes (known: {known})"
            if type_id is not None
            else f"the message has no __TypeId__ header naming one of its classes (known: {known})"
        )
        failure = self._failure
        classes = tuple(family) + ((target,) if isinstance(target, type) else ())

        def convert(payload: Any, content_type: str) -> Any:
            if _base(content_type) == _PYOBJ and isinstance(payload, classes):
                return payload
            raise failure(_base(content_type), target, (problem,))

        return convert

    def _failure(self, ct: str, target: Any, errors: tuple[str, ...]) -> ConversionError:
        return ConversionError(f"cannot convert {ct} payload to {_describe_target(target)}", errors)

    def _structure_failure(self, ct: str, target: Any, exc: Exception) -> ConversionError:
        return self._failure(ct, target, tuple(self._error_lines(exc, "$", None)))

    def _plan_any(self) -> Callable[[Any, str], Any]:
        decode = self.decode
        failure = self._failure

        def convert(payload: Any, content_type: str) -> Any:
            if content_type == _PYOBJ or _base(content_type) == _PYOBJ:
                return payload
            try:
                return decode(payload, content_type)
            except UnsupportedMediaTypeError:
                raise
            except ConversionError as exc:
                raise failure(_base(content_type), Any, exc.errors) from None

        return convert

    def _plan_str(self) -> Callable[[Any, str], Any]:
        failure = self._failure

        def convert(payload: Any, content_type: str) -> Any:
            ct = _base(content_type)
            if ct == _PYOBJ:
                if isinstance(payload, str):
                    return payload
                raise failure(ct, str, ("invalid value for type, expected str @ $",))
            if ct not in MediaType.WIRE:
                raise _refuse(ct, content_type)
            try:
                return _text_of(payload, ct)
            except ConversionError as exc:
                raise failure(ct, str, exc.errors) from None

        return convert

    def _plan_bytes(self) -> Callable[[Any, str], Any]:
        failure = self._failure

        def convert(payload: Any, content_type: str) -> Any:
            ct = _base(content_type)
            if ct == _PYOBJ:
                if isinstance(payload, (bytes, bytearray, memoryview, str)):
                    return _bytes_of(payload, ct)
                raise failure(ct, bytes, ("invalid value for type, expected bytes @ $",))
            if ct not in MediaType.WIRE:
                raise _refuse(ct, content_type)
            try:
                return _bytes_of(payload, ct)
            except ConversionError as exc:
                raise failure(ct, bytes, exc.errors) from None

        return convert

    def _wire_data(self, payload: Any, content_type: str, ct: str, target: Any) -> Any:
        """A wire payload for a structured target: JSON, also when sent as text/plain or octet-stream."""
        if ct not in MediaType.WIRE:
            raise _refuse(ct, content_type)
        try:
            return _load_json(payload, ct)
        except ConversionError as exc:
            raise self._failure(ct, target, exc.errors) from None

    def _plan_class(self, target: Any, hook: Callable[[Any, Any], Any]) -> Callable[[Any, str], Any]:
        cls = get_origin(target) or target
        wire_data = self._wire_data
        failure = self._failure
        structure_failure = self._structure_failure

        def convert(payload: Any, content_type: str) -> Any:
            ct = _base(content_type)
            if ct == _PYOBJ:
                if isinstance(payload, cls):
                    return payload
                if not isinstance(payload, Mapping):
                    got = type(payload).__qualname__
                    raise failure(ct, target, (f"expected {cls.__name__} or a mapping, got {got} @ $",))
                data = payload
            else:
                data = wire_data(payload, content_type, ct, target)
                if not isinstance(data, dict):
                    raise failure(ct, target, ("expected an object @ $",))
            try:
                return hook(data, target)
            except Exception as exc:
                raise structure_failure(ct, target, exc) from exc

        return convert

    def _plan_collection(self, target: Any, hook: Callable[[Any, Any], Any]) -> Callable[[Any, str], Any]:
        origin = get_origin(target) or target
        if _is_mapping_form(target):
            shape: tuple[type, ...] = (dict,)
            in_process: tuple[type, ...] = (Mapping,)
            expected = "expected an object @ $"
        else:
            shape = (list,)
            in_process = (list, tuple)
            if origin in _SET_ORIGINS or origin in _FROZENSET_ORIGINS:
                in_process = (list, tuple, set, frozenset)
            expected = "expected an array @ $"
        as_is = _is_bare(target) and (origin in _MAPPING_ORIGINS or origin in _LIST_ORIGINS)
        wire_data = self._wire_data
        failure = self._failure
        structure_failure = self._structure_failure

        def convert(payload: Any, content_type: str) -> Any:
            ct = _base(content_type)
            if ct == _PYOBJ:
                if not isinstance(payload, in_process):
                    raise failure(ct, target, (expected,))
            else:
                payload = wire_data(payload, content_type, ct, target)
                if not isinstance(payload, shape):
                    raise failure(ct, target, (expected,))
            if as_is:
                return payload
            try:
                return hook(payload, target)
            except Exception as exc:
                raise structure_failure(ct, target, exc) from exc

        return convert

    def _plan_other(self, target: Any, hook: Callable[[Any, Any], Any]) -> Callable[[Any, str], Any]:
        exact = target if isinstance(target, type) else None
        wire_data = self._wire_data
        structure_failure = self._structure_failure

        def convert(payload: Any, content_type: str) -> Any:
            ct = _base(content_type)
            if ct == _PYOBJ:
                if payload.__class__ is exact:
                    return payload
            else:
                payload = wire_data(payload, content_type, ct, target)
            try:
                return hook(payload, target)
            except Exception as exc:
                raise structure_failure(ct, target, exc) from exc

        return convert

    # ------------------------------------------------------------------------------------------ errors

    def _error_lines(self, exc: BaseException, path: str, tp: Any) -> list[str]:
        """Every leaf error of a cattrs exception tree as ``description @ path``, with wire key names."""
        lines: list[str] = []
        if isinstance(exc, IterableValidationError):
            with_notes, without = exc.group_exceptions()
            for sub, item in with_notes:
                lines += self._error_lines(sub, f"{path}[{item.index!r}]", item.type)
            lines += [f"{_describe_error(sub, None)} @ {path}" for sub in without]
        elif isinstance(exc, ClassValidationError):
            names = self._wire_names.get(get_origin(exc.cl) or exc.cl, {})
            with_notes_, without = exc.group_exceptions()
            for sub, attribute in with_notes_:
                lines += self._error_lines(sub, f"{path}.{names.get(attribute.name, attribute.name)}", attribute.type)
            lines += [f"{_describe_error(sub, None)} @ {path}" for sub in without]
        else:
            lines.append(f"{_describe_error(exc, tp)} @ {path}")
        return lines

    # ------------------------------------------------------------------------------------------ cattrs hooks

    def _wire_names_of(self, cls: type) -> dict[str, str]:
        names = self._wire_names.get(cls)
        if names is None:
            fields = attrs.fields(cls) if attrs.has(cls) else dataclasses.fields(cls)
            names = {f.name: _camel(f.name) if self.camel_case else f.name for f in fields}
            keys = list(names.values())
            clashes = sorted({k for k in keys if keys.count(k) > 1})
            if clashes:
                raise ValueError(
                    f"{cls.__module__}.{cls.__qualname__}: several fields have the wire key(s) {', '.join(clashes)}"
                )
            self._wire_names[cls] = names
        return names

    def _renames(self, tp: Any) -> dict[str, Any]:
        names = self._wire_names_of(get_origin(tp) or tp)
        return {name: override(rename=key) for name, key in names.items() if name != key}

    def _class_structure_hook(self, tp: Any) -> Callable[[Any, Any], Any]:
        cls = get_origin(tp) or tp
        generated = make_dict_structure_fn(
            tp, self._cattrs, _cattrs_forbid_extra_keys=self.forbid_unknown_keys, **self._renames(tp)
        )

        def structure(value: Any, _: Any) -> Any:
            if isinstance(value, cls):
                return value
            if not isinstance(value, Mapping):
                raise _Mismatch("expected an object")
            return generated(value, tp)

        # cattrs' union disambiguation reads the renamed keys from here
        structure.overrides = getattr(generated, "overrides", {})  # type: ignore[attr-defined]
        return structure

    def _class_unstructure_hook(self, tp: Any) -> Callable[[Any], Any]:
        return make_dict_unstructure_fn(tp, self._cattrs, **self._renames(tp))

    def _sequence_hook(self, tp: Any) -> Callable[[Any, Any], Any]:
        origin = get_origin(tp) or tp
        args = get_args(tp)
        list_type = list[args[0]] if args else list[Any]  # type: ignore[valid-type]
        as_list = list_structure_factory(list_type, self._cattrs)
        finish: Callable[[list[Any]], Any] | None = None
        accepted: tuple[type, ...] = (list, tuple)
        if origin in _SET_ORIGINS:
            finish, accepted = set, (list, tuple, set, frozenset)
        elif origin in _FROZENSET_ORIGINS:
            finish, accepted = frozenset, (list, tuple, set, frozenset)
        elif origin is tuple:
            finish = tuple
        elif origin is deque:
            finish = deque

        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, accepted):
                raise _Mismatch("expected an array")
            items = as_list(value, list_type)
            return items if finish is None else finish(items)

        return structure

    def _mapping_hook(self, tp: Any) -> Callable[[Any, Any], Any]:
        generated = mapping_structure_factory(tp, self._cattrs)

        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _Mismatch("expected an object")
            return generated(value, tp)

        return structure

    def _enum_hook(self, tp: Any) -> Callable[[Any, Any], Any]:
        cls: type[Enum] = tp
        by_value: dict[tuple[type, Any], Enum] = {}
        for member in cls:
            try:
                by_value[(type(member.value), member.value)] = member
            except TypeError:  # an unhashable value: found by Enum's own lookup
                continue
        shown = ", ".join(repr(m.value) for m in list(cls)[:_ENUM_VALUES_SHOWN])
        if len(cls) > _ENUM_VALUES_SHOWN:
            shown += ", ..."
        mismatch = f"invalid value for type, expected {cls.__name__} (one of {shown})"

        def structure(value: Any, _: Any) -> Any:
            if isinstance(value, cls):
                return value
            try:
                return by_value[(value.__class__, value)]
            except (KeyError, TypeError):
                pass
            if not isinstance(value, bool) and len(by_value) < len(cls):
                try:
                    return cls(value)
                except (ValueError, TypeError):
                    pass
            raise _Mismatch(mismatch)

        return structure

    def _union_hook(self, tp: Any) -> Callable[[Any, Any], Any]:
        """Unions holding primitives, None or Literals: members are checked exactly (bool is not int)."""
        members = get_args(tp)
        classes: set[type] = set()
        literals: list[Any] = []
        rest: list[Any] = []
        for member in members:
            if member is _NONE_TYPE or member in _PRIMITIVES:
                classes.add(member)
            elif get_origin(member) is Literal:
                literals.extend(get_args(member))
            else:
                rest.append(member)
        widen_int = float in classes and int not in classes
        other: Any = None if not rest else rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
        other_hook = None if other is None else self._cattrs.get_structure_hook(other)
        mismatch = f"invalid value for type, expected {_label(tp)}"

        lenient = [self._scalars[member] for member in members if member in _PRIMITIVES] if self.lenient_scalars else []

        def structure(value: Any, _: Any) -> Any:
            kind = value.__class__
            if kind in classes:
                return value
            if widen_int and kind is int:
                return float(value)
            for literal in literals:
                if literal.__class__ is kind and literal == value:
                    return literal
            if other_hook is not None:
                return other_hook(value, other)
            for coerce in lenient:  # lenient scalars: the first member the value can be coerced to
                try:
                    return coerce(value, None)
                except _Mismatch:
                    continue
            raise _Mismatch(mismatch)

        return structure
