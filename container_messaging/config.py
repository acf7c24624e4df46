"""Settings: the only module that reads configuration files and the environment.

A configuration is a YAML file (``.yaml`` / ``.yml``) or an INI file (``.ini`` / ``.cfg``); both carry exactly the
same keys.  Every key is optional; a missing key takes the default shown.

Top-level keys (INI section ``[container_messaging]``):

``service_name`` (default: none)
    This service's name, used to route distributed messages to it.  Letters, digits, ``.``, ``_`` and ``-`` only.
``scan`` (default: nothing)
    Dotted module or package names to import and scan for handlers.  A YAML list, or a string of names separated by
    commas and/or newlines (the only form an INI file has).

Group ``transport`` (YAML mapping / INI section ``[transport]``):

``url`` (default ``embedded://``)
    ``embedded://``, ``memory://``, ``pyamqp://...``, ``amqp://...``, ``amqps://...``, ``redis://...`` or
    ``rediss://...``.  ``amqps://`` and ``rediss://`` imply ``ssl = true`` whatever ``ssl`` says.  The password in
    the URL never appears in a ``repr`` or an error message (see :func:`mask_url`).
``data_folder`` (default ``.container_messaging``)
    The embedded transport's folder.  A relative path is kept as written; the caller resolves it against the
    working directory.
``polling_interval`` (default ``0.05``)
    Seconds between polls of a transport that has to poll; greater than 0.
``prefetch_count`` (default ``10``)
    Messages a consumer may hold unacknowledged; at least 1.
``auto_declare`` (default ``true``)
    Senders declare the exchange before publishing.
``confirm_publish`` (default ``true``)
    Use RabbitMQ publisher confirms.
``connect_timeout`` (default ``5.0``)
    Seconds to wait for the broker connection; greater than 0.
``heartbeat`` (default ``30``)
    AMQP heartbeat in seconds; at least 0 (0 disables heartbeats).
``ssl`` (default ``false``)
    Use TLS (implied by ``amqps://`` and ``rediss://``).

Group ``conversion`` (``[conversion]``):

``json_keys`` (default ``camelCase``)
    ``camelCase`` (Ecotone's convention) or ``as_is``.
``forbid_unknown_keys`` (default ``false``)
    A payload key that matches no field is an error instead of being ignored.

Group ``distribution`` (``[distribution]``):

``exchange`` (default ``ecotone.distributed``)
    The exchange distributed messages travel on; not empty.
``queue_prefix`` (default ``distributed_``)
    Prefix of each service's distributed queue name.

Group ``transport`` also has: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` (paths, default none) and
``ssl_verify`` (default ``true``) for TLS; ``visibility_timeout`` (default ``300``, seconds an unacknowledged
message of the embedded or Redis transport stays hidden before it is redelivered); ``publish_retries`` (default
``3``, attempts after a lost connection while publishing, then the error is raised).

Group ``recoverability`` (``[recoverability]``):

``immediate_retries`` (default ``2``)
    Retries right after a failure, in the same consumer.
``delayed_retries`` (default ``1000, 10000, 60000``)
    Then one retry after each delay (milliseconds), never holding the message unacknowledged; then the dead letter.

Group ``consumer`` (``[consumer]``):

``max_message_size`` (default ``1048576``)
    A larger message body goes straight to the dead letter.

Group ``deduplication`` (``[deduplication]``):

``store`` (default ``memory``)
    ``memory`` (bounded, per process), ``none``, a ``redis://`` URL or a ``sqlite:///path`` file (both shared by
    several consumer processes).
``window`` (default ``3600``)
    Seconds a handled message id is remembered.
``max_entries`` (default ``100000``)
    The memory store's bound.

Values:

* Every string value may refer to environment variables: ``${VAR}``, or ``${VAR:default}`` (the default may be
  empty, ``${VAR:}``, and cannot contain ``}``).  A variable that is set, even to the empty string, wins over the
  default; an unset variable without a default is an error.  ``$${`` stands for a literal ``${``.  Substituted
  values are used literally (not interpolated again).  Interpolation happens after parsing and before type
  coercion, so it works the same in YAML and INI files and for numbers and booleans written as strings.
* Booleans are YAML booleans or the strings ``true/false/yes/no/on/off/1/0`` (any case).  Integers and numbers
  may be written as strings.  String keys (``service_name``, ``url``...) must be strings in YAML: quote them.
* In YAML, ``null`` is allowed for ``service_name``, for ``scan`` (no modules) and for a whole group (all of its
  defaults); it is an error anywhere else.
* INI files are read without ``%`` interpolation and keep the case of keys; a ``[DEFAULT]`` section with keys is
  an error, as is any section not listed above.  Inline comments are not supported (``#`` or ``;`` after a value
  are part of the value).

Example (YAML)::

    service_name: billing
    scan: [billing.handlers, billing.projections]
    transport:
      url: pyamqp://guest:${AMQP_PASSWORD}@${AMQP_HOST:127.0.0.1}:5672//
      prefetch_count: 20
    conversion:
      json_keys: camelCase

The same in INI::

    [container_messaging]
    service_name = billing
    scan = billing.handlers,
           billing.projections

    [transport]
    url = pyamqp://guest:${AMQP_PASSWORD}@${AMQP_HOST:127.0.0.1}:5672//
    prefetch_count = 20

    [conversion]
    json_keys = camelCase

Every error is a :class:`~container_messaging.errors.ConfigurationError` whose message starts with the file (or
``<dict>``) and names the dotted key path, e.g.
``configs/billing.yaml: transport.prefetch_count: expected an integer, got 'abc'``.
"""

from __future__ import annotations

import ast
import configparser
import keyword
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any, Final, TypeVar

import attrs
import yaml

from container_messaging.errors import ConfigurationError
from container_messaging.redaction import mask_url

__all__ = [
    "ConsumerSettings",
    "ConversionSettings",
    "DeduplicationSettings",
    "DistributionSettings",
    "RecoverabilitySettings",
    "Settings",
    "TransportSettings",
    "URL_SCHEMES",
    "load_ini",
    "load_settings",
    "load_yaml",
    "mask_url",
    "settings_from_dict",
]

URL_SCHEMES: Final[frozenset[str]] = frozenset({"embedded", "memory", "pyamqp", "amqp", "amqps", "redis", "rediss"})
"""The transport URL schemes a configuration may use."""

_TLS_SCHEMES: Final[frozenset[str]] = frozenset({"amqps", "rediss"})
_JSON_KEYS: Final[tuple[str, ...]] = ("camelCase", "as_is")
_INI_MAIN_SECTION: Final = "container_messaging"
_YAML_EXTENSIONS: Final = (".yaml", ".yml")
_INI_EXTENSIONS: Final = (".ini", ".cfg")

# Field metadata keys: the schema lives on the attrs fields themselves.
_KIND: Final = "container_messaging.kind"
_CHECK: Final = "container_messaging.check"
_GROUP: Final = "container_messaging.group"

_Check = Callable[[Any], "str | None"]
_T = TypeVar("_T", bound=attrs.AttrsInstance)


# --------------------------------------------------------------------------------------------------------------------
# URL masking


def _masked_repr(url: str) -> str:
    return repr(mask_url(url))


# --------------------------------------------------------------------------------------------------------------------
# Value checks (shared by the loaders, which name the file and key, and by the classes' validators)


def _describe(value: Any) -> str:
    """Show a value in an error message: strings quoted, anything else with its type."""
    if isinstance(value, str):
        return repr(value)
    return f"{type(value).__name__} {value!r}"


_SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9._-]+")


def _check_service_name(value: str | None) -> str | None:
    if value is None or _SERVICE_NAME.fullmatch(value):
        return None
    return f"must be non-empty and contain only letters, digits, '.', '_' and '-', got {value!r}"


def _is_dotted_name(name: str) -> bool:
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split("."))


def _check_scan(value: tuple[str, ...]) -> str | None:
    for entry in value:
        if not _is_dotted_name(entry):
            return f"{entry!r} is not a dotted module name (like 'billing.handlers')"
    return None


def _check_url(value: str) -> str | None:
    scheme, separator, _ = value.partition("://")
    known = ", ".join(sorted(URL_SCHEMES))
    if not separator:
        return f"expected a URL such as 'pyamqp://user:password@host:5672//', got {mask_url(value)!r}"
    if scheme not in URL_SCHEMES:
        return f"unknown URL scheme {scheme!r} in {mask_url(value)!r} (known: {known})"
    return None


def _check_not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _check_positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value!r}"


def _check_at_least_one(value: int) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value!r}"


def _check_not_negative(value: int) -> str | None:
    return None if value >= 0 else f"must be at least 0 (0 disables heartbeats), got {value!r}"


def _check_delays(value: tuple[int, ...]) -> str | None:
    bad = [delay for delay in value if delay <= 0]
    return f"every delay must be a positive number of milliseconds, got {bad[0]!r}" if bad else None


def _check_dedup_store(value: str) -> str | None:
    scheme = value.partition("://")[0]
    if value in ("memory", "none") or scheme in ("redis", "rediss", "sqlite"):
        return None
    return f"must be 'memory', 'none', a redis:// URL or a sqlite:///path URL, got {mask_url(value)!r}"


def _check_json_keys(value: str) -> str | None:
    if value in _JSON_KEYS:
        return None
    return f"must be one of {', '.join(repr(choice) for choice in _JSON_KEYS)}, got {value!r}"


_EXPECTED: Final[Mapping[str, str]] = {
    "str": "a string",
    "optional_str": "a string or null",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true/false/yes/no/on/off/1/0)",
    "names": "a list of dotted module names or a comma-separated string",
    "millis": "a list of positive integers (milliseconds) or a comma-separated string",
}


def _has_type(kind: str, value: Any) -> bool:
    """Whether an already-built value (no coercion) has the type ``kind`` stands for."""
    if kind == "str":
        return isinstance(value, str)
    if kind == "optional_str":
        return value is None or isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "names":
        return isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    if kind == "millis":
        return isinstance(value, tuple) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    raise AssertionError(f"unknown kind {kind!r}")  # pragma: no cover


def _validator(kind: str, check: _Check | None) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator: a directly constructed settings object is held to the same rules as a loaded one."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        where = f"{type(instance).__name__}.{attribute.name}"
        if not _has_type(kind, value):
            raise ConfigurationError(f"{where}: expected {_EXPECTED[kind]}, got {_describe(value)}")
        if check is not None and (problem := check(value)) is not None:
            raise ConfigurationError(f"{where}: {problem}")

    return validate


def _option(default: Any, kind: str, check: _Check | None = None, *, show: Callable[[Any], str] | None = None) -> Any:
    """Declare one configuration key: its default, its kind (for coercion) and its check."""
    return attrs.field(
        default=default,
        validator=_validator(kind, check),
        repr=show if show is not None else True,
        metadata={_KIND: kind, _CHECK: check},
    )


# --------------------------------------------------------------------------------------------------------------------
# The settings model


@attrs.frozen
class TransportSettings:
    """How to reach the broker (``transport`` group); the repr masks the URL's password."""

    url: str = _option("embedded://", "str", _check_url, show=_masked_repr)
    data_folder: str = _option(".container_messaging", "str", _check_not_empty)
    polling_interval: float = _option(0.05, "float", _check_positive)
    prefetch_count: int = _option(10, "int", _check_at_least_one)
    auto_declare: bool = _option(True, "bool")
    confirm_publish: bool = _option(True, "bool")
    connect_timeout: float = _option(5.0, "float", _check_positive)
    heartbeat: int = _option(30, "int", _check_not_negative)
    ssl: bool = _option(False, "bool")
    ssl_ca_certs: str | None = _option(None, "optional_str")
    ssl_certfile: str | None = _option(None, "optional_str")
    ssl_keyfile: str | None = _option(None, "optional_str")
    ssl_verify: bool = _option(True, "bool")
    visibility_timeout: float = _option(300.0, "float", _check_positive)
    publish_retries: int = _option(3, "int", _check_not_negative)

    def __attrs_post_init__(self) -> None:
        # amqps:// and rediss:// mean TLS whatever `ssl` says.
        if self.url.partition("://")[0] in _TLS_SCHEMES and not self.ssl:
            object.__setattr__(self, "ssl", True)

    @property
    def masked_url(self) -> str:
        """The URL with its password (if any) replaced by ``***``."""
        return mask_url(self.url)


@attrs.frozen
class ConversionSettings:
    """How payloads are converted (``conversion`` group)."""

    json_keys: str = _option("camelCase", "str", _check_json_keys)
    forbid_unknown_keys: bool = _option(False, "bool")


@attrs.frozen
class DistributionSettings:
    """Ecotone's Distributed Bus names (``distribution`` group)."""

    exchange: str = _option("ecotone.distributed", "str", _check_not_empty)
    queue_prefix: str = _option("distributed_", "str")


@attrs.frozen
class RecoverabilitySettings:
    """What happens when a handler fails (``recoverability`` group); a handler's ``@retries`` overrides it."""

    immediate_retries: int = _option(2, "int", _check_not_negative)
    delayed_retries: tuple[int, ...] = _option((1000, 10000, 60000), "millis", _check_delays)


@attrs.frozen
class ConsumerSettings:
    """Consumer safeguards (``consumer`` group)."""

    max_message_size: int = _option(1_048_576, "int", _check_at_least_one)


@attrs.frozen
class DeduplicationSettings:
    """Skipping messages already handled (``deduplication`` group)."""

    store: str = _option("memory", "str", _check_dedup_store, show=_masked_repr)
    window: float = _option(3600.0, "float", _check_positive)
    max_entries: int = _option(100_000, "int", _check_at_least_one)


@attrs.frozen
class Settings:
    """Everything a configuration file says; ``source`` is the file it came from (not a key, not compared)."""

    service_name: str | None = _option(None, "optional_str", _check_service_name)
    scan: tuple[str, ...] = _option((), "names", _check_scan)
    transport: TransportSettings = attrs.field(
        factory=TransportSettings, metadata={_KIND: "group", _GROUP: TransportSettings}
    )
    conversion: ConversionSettings = attrs.field(
        factory=ConversionSettings, metadata={_KIND: "group", _GROUP: ConversionSettings}
    )
    distribution: DistributionSettings = attrs.field(
        factory=DistributionSettings, metadata={_KIND: "group", _GROUP: DistributionSettings}
    )
    recoverability: RecoverabilitySettings = attrs.field(
        factory=RecoverabilitySettings, metadata={_KIND: "group", _GROUP: RecoverabilitySettings}
    )
    consumer: ConsumerSettings = attrs.field(
        factory=ConsumerSettings, metadata={_KIND: "group", _GROUP: ConsumerSettings}
    )
    deduplication: DeduplicationSettings = attrs.field(
        factory=DeduplicationSettings, metadata={_KIND: "group", _GROUP: DeduplicationSettings}
    )
    source: str | None = attrs.field(default=None, eq=False)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a nested plain dict of configuration keys (``scan`` as a list, no ``source``).

        The URL is included unmasked, so that ``settings_from_dict(settings.as_dict())`` gives equal settings.
        """
        data = attrs.asdict(self, filter=attrs.filters.exclude(attrs.fields(Settings).source))
        data["scan"] = list(self.scan)
        data["recoverability"]["delayed_retries"] = list(self.recoverability.delayed_retries)
        return data


# --------------------------------------------------------------------------------------------------------------------
# From a plain mapping to Settings


def _error(source: str, path: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"{source}: {path}: {message}")


_REFERENCE: Final = re.compile(r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>[^}]*))?\})?")


def _interpolate(text: str, source: str, path: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` / ``${VAR:default}`` with the environment's values and ``$${`` with ``${``."""
    if "${" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        name = match.group("name")
        if name is None:
            fragment = text[match.start() : match.start() + 20]
            raise _error(
                source,
                path,
                f"malformed environment variable reference at {fragment!r} "
                "(write ${VAR} or ${VAR:default}, or $${ for a literal '${')",
            )
        value = environ.get(name)
        if value is not None:
            return value
        default = match.group("default")
        if default is None:
            raise _error(source, path, f"environment variable {name!r} is not set and {whole!r} has no default")
        return default

    return _REFERENCE.sub(replace, text)


_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_BOOLEANS: Final[Mapping[str, bool]] = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}
_NAME_SEPARATORS: Final = re.compile(r"[,\n]")


def _coerce(kind: str, value: Any, source: str, path: str, environ: Mapping[str, str]) -> Any:
    """Interpolate a raw value (if a string) and coerce it to ``kind``; raise naming ``source`` and ``path``."""
    if isinstance(value, str):
        value = _interpolate(value, source, path, environ)

    def wrong(expected: str | None = None) -> ConfigurationError:
        return _error(source, path, f"expected {expected or _EXPECTED[kind]}, got {_describe(value)}")

    if kind == "str":
        if isinstance(value, str):
            return value
        raise wrong()
    if kind == "optional_str":
        if value is None or isinstance(value, str):
            return value
        raise wrong()
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value.strip())
        raise wrong()
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise wrong() from None
        else:
            raise wrong()
        if not math.isfinite(number):
            raise wrong("a finite number")
        return number
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        raise wrong()
    if kind == "names":
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(name for name in (part.strip() for part in _NAME_SEPARATORS.split(value)) if name)
        if isinstance(value, list | tuple):
            names: list[str] = []
            for index, item in enumerate(value):
                item_path = f"{path}[{index}]"
                if not isinstance(item, str):
                    raise _error(source, item_path, f"expected a module name string, got {_describe(item)}")
                names.append(_interpolate(item, source, item_path, environ).strip())
            return tuple(names)
        raise wrong()
    if kind == "millis":
        return _coerce_millis(value, source, path, wrong)
    raise AssertionError(f"unknown kind {kind!r}")  # pragma: no cover


def _coerce_millis(value: Any, source: str, path: str, wrong: Callable[[], ConfigurationError]) -> tuple[int, ...]:
    """A list of millisecond delays: a YAML list, or a comma/newline separated string (INI)."""
    if value is None:
        return ()
    items = [part.strip() for part in _NAME_SEPARATORS.split(value)] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise wrong()
    numbers: list[int] = []
    for index, item in enumerate(items):
        number = int(item.strip()) if isinstance(item, str) and _INTEGER.fullmatch(item.strip()) else item
        if not isinstance(number, int) or isinstance(number, bool):
            raise _error(source, f"{path}[{index}]", f"expected an integer (milliseconds), got {_describe(item)}")
        numbers.append(number)
    return tuple(numbers)


def _build(cls: type[_T], data: Mapping[Any, Any], source: str, prefix: str, environ: Mapping[str, str]) -> _T:
    """Build one settings class from its mapping of keys; ``prefix`` is the dotted path of the mapping."""
    fields = {field.name: field for field in attrs.fields(cls) if _KIND in field.metadata}
    for key in data:
        if key not in fields:
            shown = repr(f"{prefix}{key}") if isinstance(key, str) else f"{prefix}{key!r}"
            raise ConfigurationError(f"{source}: unknown key {shown} (known: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, value in data.items():
        field = fields[name]
        path = f"{prefix}{name}"
        kind = field.metadata[_KIND]
        if kind == "group":
            group = {} if value is None else value
            if not isinstance(group, Mapping):
                raise _error(source, path, f"expected a mapping of {name} settings, got {_describe(group)}")
            values[name] = _build(field.metadata[_GROUP], group, source, f"{path}.", environ)
            continue
        coerced = _coerce(kind, value, source, path, environ)
        check: _Check | None = field.metadata[_CHECK]
        if check is not None and (problem := check(coerced)) is not None:
            raise _error(source, path, problem)
        values[name] = coerced
    return cls(**values)


def settings_from_dict(
    data: Mapping[str, Any], source: str = "<dict>", *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from a parsed configuration mapping (the shape of :meth:`Settings.as_dict`).

    String values are interpolated from ``environ`` (default: ``os.environ``), then coerced and validated;
    ``source`` names the origin in error messages and is stored on the result.
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source}: the top level must be a mapping of settings, got {_describe(data)}")
    settings = _build(Settings, data, source, "", os.environ if environ is None else environ)
    return attrs.evolve(settings, source=source)


# --------------------------------------------------------------------------------------------------------------------
# Files


def _read_text(source: str) -> str:
    try:
        with open(source, encoding="utf-8-sig") as file:
            return file.read()
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{source}: no such file") from exc
    except IsADirectoryError as exc:
        raise ConfigurationError(f"{source}: is a directory, not a configuration file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot read: {exc.strerror or exc}") from exc


def load_yaml(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from a YAML file (``yaml.safe_load``); an empty file gives the defaults."""
    source = os.fspath(path)
    text = _read_text(source)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigurationError(f"{source}: YAML syntax error{where}: {what}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: YAML error: {exc}") from exc
    if data is None:
        data = {}
    return settings_from_dict(data, source, environ=environ)


class _IniParser(configparser.ConfigParser):
    """A ConfigParser that keeps the case of keys, so INI and YAML accept exactly the same keys."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _ini_line(line: str) -> str:
    """Show a line configparser reported (it stores the line's repr) as a quoted string without its newline."""
    try:
        text = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        text = line
    return repr(str(text).strip())


def _ini_syntax_error(source: str, exc: configparser.Error) -> ConfigurationError:
    if isinstance(exc, configparser.MissingSectionHeaderError):
        detail = f"line {exc.lineno}: {exc.line.strip()!r} is outside any section (start with [{_INI_MAIN_SECTION}])"
    elif isinstance(exc, configparser.ParsingError):
        detail = "; ".join(f"line {lineno}: cannot parse {_ini_line(line)}" for lineno, line in exc.errors)
    elif isinstance(exc, configparser.DuplicateSectionError):
        detail = f"line {exc.lineno}: section [{exc.section}] appears twice"
    elif isinstance(exc, configparser.DuplicateOptionError):
        detail = f"line {exc.lineno}: key {exc.option!r} appears twice in section [{exc.section}]"
    else:  # pragma: no cover - configparser's other errors do not arise from read_string
        detail = " ".join(str(exc).split())
    return ConfigurationError(f"{source}: INI syntax error: {detail}")


def load_ini(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from an INI file: ``[container_messaging]`` for top-level keys, one section per group."""
    source = os.fspath(path)
    text = _read_text(source)
    parser = _IniParser(interpolation=None)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise _ini_syntax_error(source, exc) from exc

    groups = {field.name for field in attrs.fields(Settings) if field.metadata.get(_KIND) == "group"}
    known_sections = ", ".join(f"[{name}]" for name in sorted({_INI_MAIN_SECTION, *groups}))
    if parser.defaults():
        raise ConfigurationError(f"{source}: unknown section [{parser.default_section}] (known: {known_sections})")
    data: dict[str, Any] = {}
    for section in parser.sections():
        items = dict(parser.items(section))
        if section == _INI_MAIN_SECTION:
            for key in items:
                if key in groups:
                    raise ConfigurationError(
                        f"{source}: {key}: in an INI file the {key} settings go in a [{key}] section"
                    )
            data.update(items)
        elif section in groups:
            data[section] = items
        else:
            raise ConfigurationError(f"{source}: unknown section [{section}] (known: {known_sections})")
    return settings_from_dict(data, source, environ=environ)


def load_settings(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from a file, choosing the format by extension: ``.yaml``/``.yml`` or ``.ini``/``.cfg``."""
    source = os.fspath(path)
    extension = PurePath(source).suffix.lower()
    if extension in _YAML_EXTENSIONS:
        return load_yaml(source, environ=environ)
    if extension in _INI_EXTENSIONS:
        return load_ini(source, environ=environ)
    known = ", ".join(sorted((*_YAML_EXTENSIONS, *_INI_EXTENSIONS)))
    found = f"extension {extension!r}" if extension else "no extension"
    raise ConfigurationError(f"{source}: unknown configuration file type ({found}; known extensions: {known})")
