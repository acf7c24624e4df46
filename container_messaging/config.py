"""Settings: the only module that reads configuration files and the environment.

A configuration is a YAML file (``.yaml`` / ``.yml``) or an INI file (``.ini`` / ``.cfg``); both carry exactly the
same keys.  Every key is optional; a missing key takes the default shown.

Top-level keys (INI section ``[container_messaging]``):

``service_name`` (default: none)
    This service's name, used to route distributed messages to it.  Letters, digits, ``.``, ``_`` and ``-`` only.
``scan`` (default: nothing)
    Dotted module or package names to import and scan for handlers.  A YAML list, or a string of names separated by
    commas and/or newlines (the only form an INI file has).  Looked for in the configuration file's folder first
    (``Settings.folder``), then on ``sys.path`` (see :mod:`container_messaging.scanning`).

Group ``transport`` (YAML mapping / INI section ``[transport]``):

``url`` (default ``embedded://``)
    ``embedded://``, ``memory://``, ``pyamqp://...``, ``amqp://...``, ``amqps://...``, ``redis://...`` or
    ``rediss://...``.  ``amqps://`` and ``rediss://`` imply ``ssl = true`` whatever ``ssl`` says.  The value is a
    :class:`~container_messaging.redaction.SecretUrl`: its password never appears in a ``repr``, ``str`` or error
    message.  A ``/``, ``?`` or ``#`` in the user name or password must be percent-encoded (``%2F``, ``%3F``,
    ``%23``); unencoded, it is an error saying so.  For a RabbitMQ cluster, several URLs of one scheme (failover):
    a YAML list, or kombu's ``url1;url2;url3`` (the only form an INI file has); held as the ``;``-joined string.
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
``5``, attempts after a lost connection or a refused publish, waiting 0.2 s before the first and doubling up to 2 s:
about 5 s in all, time for a RabbitMQ cluster to fail over; then the error is raised); ``queue_type`` (default
``classic``, or ``quorum``: RabbitMQ's replicated queues for the service's queue, its dead letter queue and its
delay queues; RabbitMQ URLs only) and ``delivery_limit`` (default ``20``, at least 1: a quorum queue hands a message
returned more than this many times to the dead letter queue).

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
    several consumer processes).  A :class:`~container_messaging.redaction.SecretUrl`, like ``transport.url``.
``window`` (default ``3600``)
    Seconds a handled message id is remembered.
``max_entries`` (default ``100000``)
    The memory store's bound.

Values:

* Every string value may refer to environment variables: ``${VAR}``, or ``${VAR:default}`` (the default may be
  empty, ``${VAR:}``, and cannot contain ``}``).  A variable that is set, even to the empty string, wins over the
  default; an unset variable without a default is an error.  ``$${`` stands for a literal ``${``.  Substituted
  values are used literally (not interpolated again).  Interpolation happens after parsing and before type
  coercion, so it works the same in YAML and INI files and for numbers and booleans written as strings; in a list,
  each string item is interpolated.
* Booleans are YAML booleans or the strings ``true/false/yes/no/on/off/1/0`` (any case).  Integers and numbers
  may be written as strings.  String keys (``service_name``, ``url``...) must be strings in YAML: quote them.
* A list of URLs is allowed for ``transport.url`` only.
* In YAML, ``null`` is allowed for ``service_name``, the ``ssl_ca_certs``/``ssl_certfile``/``ssl_keyfile`` paths,
  ``scan`` (no modules), ``delayed_retries`` (no delayed retries) and a whole group (all of its defaults); it is an
  error anywhere else.
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
``configs/billing.yaml: transport.prefetch_count: expected an integer, got 'abc'``; an unknown key lists the known
ones.  The bad keys found in one pass are reported together, separated by ``; `` (unknown keys first; a range or
pattern check of a group runs once its keys all have the right type).  No error quotes a password: a syntax error
names the line and column without the line's text, a quoted string has its URL password masked, and a list or
mapping is shown only by its type.

The file's keys are structured with cattrs: one structure hook per value type (``str``, ``int``, ``float``,
``bool``, ``str | None``, :class:`~container_messaging.redaction.SecretUrl`, the lists), which interpolates and
coerces as described above.  The same parsers, without interpolation or coercion, validate settings objects built
directly in code (``TransportSettings(prefetch_count=0)`` is an error naming the class and the field).

The configuration file of the command line is ``--config`` or else the ``CONTAINER_MESSAGING_CONFIG`` environment
variable (:func:`config_path`): this module is the only one that reads the environment.
"""

from __future__ import annotations

import configparser
import keyword
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import PurePath
from typing import Any, Final, NewType, TypeVar

import attrs
import cattrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override

from container_messaging.errors import ConfigurationError
from container_messaging.redaction import SecretUrl, mask_url

__all__ = [
    "CONFIG_ENV",
    "ConsumerSettings",
    "ConversionSettings",
    "DeduplicationSettings",
    "DistributionSettings",
    "RecoverabilitySettings",
    "Settings",
    "TransportSettings",
    "URL_SCHEMES",
    "config_path",
    "load_ini",
    "load_settings",
    "load_yaml",
    "settings_from_dict",
]

URL_SCHEMES: Final[frozenset[str]] = frozenset({"embedded", "memory", "pyamqp", "amqp", "amqps", "redis", "rediss"})
"""The transport URL schemes a configuration may use."""

CONFIG_ENV: Final = "CONTAINER_MESSAGING_CONFIG"
"""The environment variable naming the configuration file when none is given (see :func:`config_path`)."""

_TLS_SCHEMES: Final[frozenset[str]] = frozenset({"amqps", "rediss"})
_AMQP_SCHEMES: Final[frozenset[str]] = frozenset({"pyamqp", "amqp", "amqps"})
_QUEUE_TYPES: Final[tuple[str, ...]] = ("classic", "quorum")
_REDIS_SCHEMES: Final[frozenset[str]] = frozenset({"redis", "rediss"})
_JSON_KEYS: Final[tuple[str, ...]] = ("camelCase", "as_is")
_INI_MAIN_SECTION: Final = "container_messaging"
_YAML_EXTENSIONS: Final = (".yaml", ".yml")
_INI_EXTENSIONS: Final = (".ini", ".cfg")

_T = TypeVar("_T")


def config_path(given: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """The configuration file to load: ``given`` when set, else ``$CONTAINER_MESSAGING_CONFIG``; None when neither.

    An empty value counts as not set.  ``environ`` replaces ``os.environ`` (for tests).
    """
    if given is not None and os.fspath(given):
        return os.fspath(given)
    return (os.environ if environ is None else environ).get(CONFIG_ENV) or None


# --------------------------------------------------------------------------------------------------------------------
# Problems: what the parsers, checks and validators raise, before the loader names the file and the key path


class _Problem(Exception):
    """A value that cannot be this setting: ``problem`` says why; ``at`` is the place below the key (``[1]``)."""

    def __init__(self, problem: str, at: str = "") -> None:
        super().__init__(f"{at}: {problem}" if at else problem)
        self.problem = problem
        self.at = at


class _FieldError(ConfigurationError):
    """A settings class built with a bad value: names the class and the field (the loader renames it by key path)."""

    def __init__(self, owner: type, field: str, problem: str) -> None:
        super().__init__(f"{owner.__name__}.{field}: {problem}")
        self.field = field
        self.problem = problem


def _describe(value: Any) -> str:
    """Show a wrong value in an error message: a string quoted (a URL's password masked), a number or a boolean
    with its type, anything else (a list, a mapping) by its type only, so that no nested secret is quoted."""
    if isinstance(value, str):
        return repr(mask_url(value))
    if value is None or isinstance(value, bool | int | float):
        return f"{type(value).__name__} {value!r}"
    return f"a {type(value).__name__}"


def _wrong(expected: str, value: Any) -> _Problem:
    return _Problem(f"expected {expected}, got {_describe(value)}")


# --------------------------------------------------------------------------------------------------------------------
# Environment interpolation

_REFERENCE: Final = re.compile(r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>[^}]*))?\})?")


def _interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` / ``${VAR:default}`` with the environment's values and ``$${`` with ``${``."""
    if "${" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        name = match.group("name")
        if name is None:  # the position, not the text: the text may be a password
            raise _Problem(
                f"malformed environment variable reference at character {match.start() + 1} "
                "(write ${VAR} or ${VAR:default}, or $${ for a literal '${')"
            )
        value = environ.get(name)
        if value is not None:
            return value
        default = match.group("default")
        if default is None:
            raise _Problem(f"environment variable {name!r} is not set and {whole!r} has no default")
        return default

    return _REFERENCE.sub(replace, text)


# --------------------------------------------------------------------------------------------------------------------
# Parsers, one per value type.  ``read`` is None for a value built in code: the type is checked, nothing is coerced.
# When loading, ``read`` interpolates a string from the file, and strings are coerced to numbers and booleans.

_Read = Callable[[str], str] | None

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
_LIST_SEPARATORS: Final = re.compile(r"[,\n]")


def _literal(text: str) -> str:
    """The ``read`` of a part of a list string: loaded (coerced) but already interpolated with its whole."""
    return text


def _read(value: Any, read: _Read) -> Any:
    return read(value) if read is not None and isinstance(value, str) else value


def _parse_str(value: Any, read: _Read) -> str:
    value = _read(value, read)
    if isinstance(value, str):
        return value
    raise _wrong("a string", value)


def _parse_secret_url(value: Any, read: _Read) -> SecretUrl:
    return SecretUrl(_parse_str(value, read))


BrokerUrl = NewType("BrokerUrl", SecretUrl)
"""The type of ``transport.url``: one URL, or a failover list held as ``url1;url2;url3``."""


def _parse_broker_url(value: Any, read: _Read) -> BrokerUrl:
    """A URL, or (in a file, or a list or tuple in code) several URLs joined with ``;``; a mistyped item is named by
    its index."""
    if isinstance(value, list | tuple):
        return BrokerUrl(SecretUrl(";".join(_parse_list(value, read, "a list of URLs", _parse_str))))
    return BrokerUrl(_parse_secret_url(value, read))


def _parse_optional_str(value: Any, read: _Read) -> str | None:
    value = _read(value, read)
    if value is None or isinstance(value, str):
        return value
    raise _wrong("a string or null", value)


def _parse_int(value: Any, read: _Read, expected: str = "an integer") -> int:
    value = _read(value, read)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if read is not None and isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise _wrong(expected, value)


def _parse_float(value: Any, read: _Read) -> float:
    value = _read(value, read)
    number = value
    if read is not None and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _wrong("a number", value) from None
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise _wrong("a number", value)
    if not math.isfinite(number):
        raise _wrong("a finite number", value)
    return number if read is None else float(number)


def _parse_bool(value: Any, read: _Read) -> bool:
    value = _read(value, read)
    if isinstance(value, bool):
        return value
    if read is not None and isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise _wrong("a boolean (true/false/yes/no/on/off/1/0)", value)


def _parse_list(value: Any, read: _Read, expected: str, item: Callable[[Any, _Read], _T]) -> tuple[_T, ...]:
    """A list setting: a tuple in code; in a file a list, a comma/newline separated string, or null (empty)."""
    if read is not None and value is None:
        return ()
    if read is not None and isinstance(value, str):
        parts = (part.strip() for part in _LIST_SEPARATORS.split(read(value)))
        return tuple(item(part, _literal) for part in parts if part)
    if not isinstance(value, (tuple,) if read is None else (list, tuple)):
        raise _wrong(expected, value)
    parsed: list[_T] = []
    for index, entry in enumerate(value):
        try:
            parsed.append(item(entry, read))
        except _Problem as exc:
            raise _Problem(exc.problem, f"[{index}]") from None
    return tuple(parsed)


def _parse_module_name(value: Any, read: _Read) -> str:
    value = _read(value, read)
    if isinstance(value, str):
        return value.strip()
    raise _wrong("a module name string", value)


def _parse_delay(value: Any, read: _Read) -> int:
    return _parse_int(value, read, "an integer (milliseconds)")


def _parse_module_names(value: Any, read: _Read) -> tuple[str, ...]:
    expected = "a list of dotted module names or a comma-separated string"
    return _parse_list(value, read, expected, _parse_module_name)


def _parse_delays(value: Any, read: _Read) -> tuple[int, ...]:
    expected = "a list of positive integers (milliseconds) or a comma-separated string"
    return _parse_list(value, read, expected, _parse_delay)


_PARSERS: Final[Mapping[Any, Callable[[Any, _Read], Any]]] = {
    str: _parse_str,
    SecretUrl: _parse_secret_url,
    BrokerUrl: _parse_broker_url,
    str | None: _parse_optional_str,
    int: _parse_int,
    float: _parse_float,
    bool: _parse_bool,
    tuple[str, ...]: _parse_module_names,
    tuple[int, ...]: _parse_delays,
}
"""The parser of each value type a settings field may have (the field's annotation picks it)."""


# --------------------------------------------------------------------------------------------------------------------
# Value checks (run by the classes' validators: on loaded and on directly constructed settings alike)

_Check = Callable[[Any], "str | None"]

_SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9._-]+")


def _check_service_name(value: str | None) -> str | None:
    if value is None or _SERVICE_NAME.fullmatch(value):
        return None
    return f"must be non-empty and contain only letters, digits, '.', '_' and '-', got {_describe(value)}"


def _is_dotted_name(name: str) -> bool:
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split("."))


def _check_scan(value: tuple[str, ...]) -> str | None:
    for entry in value:
        if not _is_dotted_name(entry):
            return f"{_describe(entry)} is not a dotted module name (like 'billing.handlers')"
    return None


_AUTHORITY_END: Final = re.compile(r"[/?#]")


def _check_authority(url: str) -> str | None:
    """Whether the user info and port of ``url`` (each URL of a ``;`` list) can be read; never quotes a password.

    A ``/``, ``?`` or ``#`` in the password ends the URL's authority early: the port would then be read from the
    password, and kombu would say ``Port could not be cast to integer value as '<part of the password>'``.
    """
    for part in url.split(";"):
        rest = part.partition("://")[2]
        end = _AUTHORITY_END.search(rest)
        authority, after = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
        if "@" in after and "@" not in authority:
            return (
                f"the user name or password in {mask_url(url)!r} holds an unencoded '/', '?' or '#': "
                "percent-encode it ('/' is %2F, '?' is %3F, '#' is %23)"
            )
        try:
            urllib.parse.urlsplit(part).port  # noqa: B018 - parsing the port is the check
        except ValueError:  # its message quotes the URL's text: not chained
            return f"the host or port in {mask_url(url)!r} cannot be read (the port is a number from 0 to 65535)"
    return None


def _check_url(value: str) -> str | None:
    known = ", ".join(sorted(URL_SCHEMES))
    if ";" in value and not all(value.split(";")):
        return f"an empty URL in the failover list {mask_url(value)!r} (a ';' too many?)"
    for part in value.split(";"):
        scheme, separator, _ = part.partition("://")
        if not separator:
            return f"expected a URL such as 'pyamqp://user:password@host:5672//', got {mask_url(part)!r}"
        if scheme not in URL_SCHEMES:
            return f"unknown URL scheme {scheme!r} in {mask_url(part)!r} (known: {known})"
    schemes = sorted({part.partition("://")[0] for part in value.split(";")})
    if ";" in value and (len(schemes) > 1 or schemes[0] not in _AMQP_SCHEMES):
        return (
            f"several URLs (a failover list) must all be RabbitMQ URLs of one scheme (amqp, amqps or pyamqp), got "
            f"{', '.join(schemes)} in {mask_url(value)!r}"
        )
    return _check_authority(value)


def _check_not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _check_positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value!r}"


def _check_at_least_one(value: int) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value!r}"


def _check_queue_type(value: str) -> str | None:
    if value in _QUEUE_TYPES:
        return None
    return f"must be one of {', '.join(repr(choice) for choice in _QUEUE_TYPES)}, got {_describe(value)}"


def _check_not_negative(value: int) -> str | None:
    return None if value >= 0 else f"must be at least 0 (0 disables heartbeats), got {value!r}"


def _check_delays(value: tuple[int, ...]) -> str | None:
    bad = [delay for delay in value if delay <= 0]
    return f"every delay must be a positive number of milliseconds, got {bad[0]!r}" if bad else None


def _check_dedup_store(value: str) -> str | None:
    scheme = value.partition("://")[0]
    if scheme in _REDIS_SCHEMES:
        return _check_authority(value)
    if value in ("memory", "none") or scheme == "sqlite":
        return None
    return f"must be 'memory', 'none', a redis:// URL or a sqlite:///path URL, got {mask_url(value)!r}"


def _check_json_keys(value: str) -> str | None:
    if value in _JSON_KEYS:
        return None
    return f"must be one of {', '.join(repr(choice) for choice in _JSON_KEYS)}, got {_describe(value)}"


def _validator(check: _Check | None) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator: the value has the field's type (its parser, without coercion) and passes ``check``."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            _PARSERS[attribute.type](value, None)
        except _Problem as exc:
            raise _FieldError(type(instance), f"{attribute.name}{exc.at}", exc.problem) from None
        if check is not None and (problem := check(value)) is not None:
            raise _FieldError(type(instance), attribute.name, problem)

    return validate


def _secret_url(value: str) -> SecretUrl:
    """The converter of a key that may hold a password (a value of another type is left to the validator); a list or
    tuple of strings, as ``transport.url`` takes in code, is joined with ``;``."""
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return SecretUrl(";".join(value))
    return SecretUrl(value) if isinstance(value, str) else value


def _option(default: Any, check: _Check | None = None, *, secret: bool = False) -> Any:
    """One configuration key: its default and its check (its type is the field's annotation).

    A ``secret`` key (a URL that may hold a password) is kept as a :class:`SecretUrl`, masked wherever it is shown.
    """
    return attrs.field(default=default, converter=_secret_url if secret else None, validator=_validator(check))


# --------------------------------------------------------------------------------------------------------------------
# The settings model


@attrs.frozen
class TransportSettings:
    """How to reach the broker (``transport`` group); ``url`` is a :class:`SecretUrl` (masked when shown), several
    URLs joined with ``;``."""

    url: BrokerUrl = _option("embedded://", _check_url, secret=True)  # noqa: RUF009 - a str, immutable
    data_folder: str = _option(".container_messaging", _check_not_empty)
    polling_interval: float = _option(0.05, _check_positive)
    prefetch_count: int = _option(10, _check_at_least_one)
    auto_declare: bool = _option(True)
    confirm_publish: bool = _option(True)
    connect_timeout: float = _option(5.0, _check_positive)
    heartbeat: int = _option(30, _check_not_negative)
    ssl: bool = _option(False)
    ssl_ca_certs: str | None = _option(None)
    ssl_certfile: str | None = _option(None)
    ssl_keyfile: str | None = _option(None)
    ssl_verify: bool = _option(True)
    visibility_timeout: float = _option(300.0, _check_positive)
    publish_retries: int = _option(5, _check_not_negative)
    queue_type: str = _option("classic", _check_queue_type)
    delivery_limit: int = _option(20, _check_at_least_one)

    def __attrs_post_init__(self) -> None:
        scheme = self.url.partition("://")[0]
        if self.queue_type != "classic" and scheme not in _AMQP_SCHEMES:
            problem = f"{self.queue_type!r} queues are RabbitMQ's (an amqp:// url), not {scheme}:// ones"
            raise _FieldError(type(self), "queue_type", problem)
        # amqps:// and rediss:// mean TLS whatever `ssl` says.
        if scheme in _TLS_SCHEMES and not self.ssl:
            object.__setattr__(self, "ssl", True)

    @property
    def masked_url(self) -> str:
        """The URL with its password (if any) replaced by ``***``."""
        return mask_url(self.url)


@attrs.frozen
class ConversionSettings:
    """How payloads are converted (``conversion`` group)."""

    json_keys: str = _option("camelCase", _check_json_keys)
    forbid_unknown_keys: bool = _option(False)


@attrs.frozen
class DistributionSettings:
    """Ecotone's Distributed Bus names (``distribution`` group)."""

    exchange: str = _option("ecotone.distributed", _check_not_empty)
    queue_prefix: str = _option("distributed_")


@attrs.frozen
class RecoverabilitySettings:
    """What happens when a handler fails (``recoverability`` group); a handler's ``@retries`` overrides it."""

    immediate_retries: int = _option(2, _check_not_negative)
    delayed_retries: tuple[int, ...] = _option((1000, 10000, 60000), _check_delays)


@attrs.frozen
class ConsumerSettings:
    """Consumer safeguards (``consumer`` group)."""

    max_message_size: int = _option(1_048_576, _check_at_least_one)


@attrs.frozen
class DeduplicationSettings:
    """Skipping messages already handled (``deduplication`` group); ``store`` is a :class:`SecretUrl`."""

    store: SecretUrl = _option("memory", _check_dedup_store, secret=True)  # noqa: RUF009 - a str, immutable
    window: float = _option(3600.0, _check_positive)
    max_entries: int = _option(100_000, _check_at_least_one)


@attrs.frozen
class Settings:
    """Everything a configuration file says.

    Two attributes are not keys and not compared: ``source``, the file (or label) the settings came from, for error
    messages; ``folder``, the absolute folder of the configuration file (None when not loaded from a file), where
    ``scan`` looks for modules first.
    """

    service_name: str | None = _option(None, _check_service_name)
    scan: tuple[str, ...] = _option((), _check_scan)
    transport: TransportSettings = attrs.field(factory=TransportSettings)
    conversion: ConversionSettings = attrs.field(factory=ConversionSettings)
    distribution: DistributionSettings = attrs.field(factory=DistributionSettings)
    recoverability: RecoverabilitySettings = attrs.field(factory=RecoverabilitySettings)
    consumer: ConsumerSettings = attrs.field(factory=ConsumerSettings)
    deduplication: DeduplicationSettings = attrs.field(factory=DeduplicationSettings)
    source: str | None = attrs.field(default=None, eq=False)
    folder: str | None = attrs.field(default=None, eq=False)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a nested plain dict of configuration keys (``scan`` as a list, no ``source``/``folder``).

        The URLs are included as :class:`SecretUrl` values (their text unmasked, their repr masked), so that
        ``settings_from_dict(settings.as_dict())`` gives equal settings and printing the dict shows no password.
        """
        fields = attrs.fields(Settings)
        data = attrs.asdict(self, filter=attrs.filters.exclude(fields.source, fields.folder))
        data["scan"] = list(self.scan)
        data["recoverability"]["delayed_retries"] = list(self.recoverability.delayed_retries)
        return data


_GROUPS: Final[tuple[type, ...]] = (
    TransportSettings,
    ConversionSettings,
    DistributionSettings,
    RecoverabilitySettings,
    ConsumerSettings,
    DeduplicationSettings,
)

for _settings_class in (*_GROUPS, Settings):
    attrs.resolve_types(_settings_class)  # the validators pick their parser by the (postponed) annotation
del _settings_class


def _group_names() -> dict[type, str]:
    """Each group class and its key (``TransportSettings`` -> ``transport``)."""
    return {field.type: field.name for field in attrs.fields(Settings) if field.type in _GROUPS}


_NOT_KEYS: Final = ("source", "folder")


def _keys(cls: type) -> list[str]:
    """The configuration keys of a settings class (``Settings.source`` and ``Settings.folder`` are not keys)."""
    return [field.name for field in attrs.fields(cls) if field.name not in _NOT_KEYS]


# --------------------------------------------------------------------------------------------------------------------
# From a plain mapping to Settings: cattrs, with a structure hook per value type


def _settings_converter(environ: Mapping[str, str]) -> cattrs.Converter:
    """A converter for one load: every value hook interpolates from ``environ``, then parses (coercing)."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def read(text: str) -> str:
        return _interpolate(text, environ)

    for tp, parse in _PARSERS.items():

        def structure(value: Any, _type: Any, parse: Callable[[Any, _Read], Any] = parse) -> Any:
            return parse(value, read)

        if isinstance(tp, type):
            converter.register_structure_hook(tp, structure)
        else:  # a union or a parametrized tuple: matched by equality
            converter.register_structure_hook_func(_is(tp), structure)

    for cls, name in _group_names().items():
        converter.register_structure_hook(cls, _group_hook(converter, cls, name))
    settings_hook = make_dict_structure_fn(Settings, converter, source=override(omit=True), folder=override(omit=True))
    converter.register_structure_hook(Settings, settings_hook)
    return converter


def _is(expected: Any) -> Callable[[Any], bool]:
    def matches(candidate: Any) -> bool:
        return bool(candidate == expected)

    return matches


def _group_hook(converter: cattrs.Converter, cls: type[_T], name: str) -> Callable[[Any, Any], _T]:
    """A group's hook: null means all of its defaults; anything else but a mapping is an error."""
    structure = make_dict_structure_fn(cls, converter)

    def hook(value: Any, _type: Any) -> _T:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _Problem(f"expected a mapping of {name} settings, got {_describe(value)}")
        return structure(value, cls)

    return hook


def _problems(exc: BaseException, prefix: str = "") -> Iterator[str]:
    """``key.path: problem`` for each error cattrs collected (per level: unknown keys and checks first, then keys)."""
    if isinstance(exc, ClassValidationError):
        with_key, without_key = exc.group_exceptions()
        for error in without_key:
            yield from _problems(error, prefix)
        for error, note in with_key:
            key = f"{prefix}{note.name}"
            yield from _problems(error, f"{key}.") if isinstance(error, ClassValidationError) else _leaf(error, key)
    elif isinstance(exc, ForbiddenExtraKeysError):
        unknown = sorted(exc.extra_fields, key=str)
        shown = ", ".join(repr(f"{prefix}{key}") if isinstance(key, str) else f"{prefix}{key!r}" for key in unknown)
        plural = "s" if len(unknown) > 1 else ""
        yield f"unknown key{plural} {shown} (known: {', '.join(sorted(_keys(exc.cl)))})"
    elif isinstance(exc, _FieldError):
        yield f"{prefix}{exc.field}: {exc.problem}"
    else:
        yield from _leaf(exc, prefix.rstrip("."))


def _leaf(exc: BaseException, key: str) -> Iterator[str]:
    if isinstance(exc, _Problem):
        yield f"{key}{exc.at}: {exc.problem}"
    else:  # not raised by this module's parsers: a bug, shown by its type only (its text might quote a value)
        yield f"{key}: cannot be read ({type(exc).__name__})"


def settings_from_dict(
    data: Mapping[str, Any], source: str = "<dict>", *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from a parsed configuration mapping (the shape of :meth:`Settings.as_dict`).

    String values are interpolated from ``environ`` (default: ``os.environ``), then coerced and validated;
    ``source`` names the origin in error messages and is stored on the result.
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source}: the top level must be a mapping of settings, got {_describe(data)}")
    converter = _settings_converter(os.environ if environ is None else environ)
    try:
        settings = converter.structure(data, Settings)
    except ClassValidationError as exc:
        raise ConfigurationError(f"{source}: {'; '.join(_problems(exc))}") from exc
    except _FieldError as exc:  # Settings' own validators, when every key was read
        raise ConfigurationError(f"{source}: {exc.field}: {exc.problem}") from exc
    return attrs.evolve(settings, source=source)


# --------------------------------------------------------------------------------------------------------------------
# Files


def _from_file(data: Any, source: str, environ: Mapping[str, str] | None) -> Settings:
    settings = settings_from_dict(data, source, environ=environ)
    return attrs.evolve(settings, folder=os.path.dirname(os.path.abspath(source)))


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


def _yaml_syntax_error(source: str, exc: yaml.MarkedYAMLError) -> ConfigurationError:
    """The error naming file, line and column; PyYAML's snippet of the line (it may hold a password) is dropped."""
    for mark in (exc.context_mark, exc.problem_mark):
        if mark is not None:
            mark.buffer = None  # no buffer, no snippet in str(exc): the exception stays chained, without the line
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = "; ".join(part for part in (exc.context, exc.problem) if part)
    return ConfigurationError(f"{source}: YAML syntax error{where}: {what}")


def load_yaml(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from a YAML file (``yaml.safe_load``); an empty file gives the defaults."""
    source = os.fspath(path)
    text = _read_text(source)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_syntax_error(source, exc) from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: YAML error: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        # PyYAML's constructor of an explicitly tagged scalar (!!int, !!float, !!bool, !!timestamp) failed; its
        # message quotes the value, which may be a password, so it is neither shown nor chained.
        raise ConfigurationError(
            f"{source}: YAML error: a value with an explicit tag (such as !!int, !!float, !!bool or !!timestamp) "
            f"cannot be read as that type ({type(exc).__name__})"
        ) from None
    if data is None:
        data = {}
    return _from_file(data, source, environ)


class _IniParser(configparser.ConfigParser):
    """A ConfigParser that keeps the case of keys, so INI and YAML accept exactly the same keys."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


_INI_KEY: Final = re.compile(r"\s*([^=:]*?)\s*[=:]")


def _ini_syntax_error(source: str, exc: configparser.Error) -> ConfigurationError:
    """The error naming file and line; a line's text is not quoted (it may hold a password), only its key."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        key = _INI_KEY.match(exc.line)
        what = f"key {key.group(1)!r}" if key is not None else "a line"
        detail = f"line {exc.lineno}: {what} is outside any section (start with [{_INI_MAIN_SECTION}])"
    elif isinstance(exc, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _line in exc.errors)
        detail = (
            f"line{'s' if len(exc.errors) > 1 else ''} {lines}: neither 'key = value', a [section] header, "
            "an indented continuation nor a comment"
        )
    elif isinstance(exc, configparser.DuplicateSectionError):
        detail = f"line {exc.lineno}: section [{exc.section}] appears twice"
    elif isinstance(exc, configparser.DuplicateOptionError):
        detail = f"line {exc.lineno}: key {exc.option!r} appears twice in section [{exc.section}]"
    else:  # pragma: no cover - configparser's other errors do not arise from read_string
        detail = type(exc).__name__
    return ConfigurationError(f"{source}: INI syntax error: {detail}")


def load_ini(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from an INI file: ``[container_messaging]`` for top-level keys, one section per group."""
    source = os.fspath(path)
    text = _read_text(source)
    parser = _IniParser(interpolation=None)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        # configparser's message quotes the offending lines, which may hold a password: it is not chained.
        raise _ini_syntax_error(source, exc) from None

    groups = set(_group_names().values())
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
    return _from_file(data, source, environ)


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
