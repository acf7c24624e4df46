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
    Seconds to wait for the broker connection, for any answer of Redis, and, in a RabbitMQ consumer, for any answer
    of RabbitMQ; greater than 0.
``heartbeat`` (default ``30``)
    AMQP heartbeat in seconds; at least 0 (0 disables heartbeats).  Redis: seconds after which a consumer that
    stopped renewing its alive key counts as gone, its messages taken over by another (0: ``visibility_timeout``).
``ssl`` (default ``false``)
    Use TLS (implied by ``amqps://`` and ``rediss://``).

Group ``conversion`` (``[conversion]``):

``json_keys`` (default ``camelCase``)
    ``camelCase`` (Ecotone's convention) or ``as_is``.
``forbid_unknown_keys`` (default ``false``)
    A payload key that matches no field is an error instead of being ignored.
``scalars`` (default ``strict``)
    ``strict`` or ``lenient``: coerce scalars as a PHP service's serializer does (a number for a string field...).

Group ``distribution`` (``[distribution]``):

``exchange`` (default ``ecotone.distributed``)
    The exchange distributed messages travel on; not empty.
``queue_prefix`` (default ``distributed_``)
    Prefix of each service's distributed queue name.
``unsubscribed_events`` (default ``drop``)
    An event no service subscribes to: ``drop`` it, or ``error`` (Ecotone 1.326 publishes mandatory).

Group ``transport`` also has: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` (paths, default none) and
``ssl_verify`` (default ``true``) for TLS; ``visibility_timeout`` (default ``300``, seconds a message of the
embedded or Redis transport may stay unacknowledged with one consumer before it is given to another);
``reply_timeout`` (default ``30``, seconds RabbitMQ has to answer a sender or an administrative request, a
publisher confirm included, and to confirm a consumer's dead letter or retry copy; Redis answers within
``connect_timeout``); ``publish_retries`` (default
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

Message channels, Service Maps and several distributed buses (nested keys; in INI, dotted sections such as
``[channels.NAME]``, ``[service_map]``, ``[service_map.commands]``, ``[distributed_buses.NAME.service_map]``):

``channels`` (default: none)
    ``<name>: {url: ...}``: a message channel, a durable queue named after it, on the broker of ``url`` (default:
    ``transport.url``). ``null`` for all defaults. ``stream: true`` (Redis only): an event stream, each event
    appended once and read by every consuming service in a consumer group of its own (events only).
``consume`` (default: none)
    The channels this service consumes (each an endpoint named after it); like ``scan``, a list or a string.
``service_map`` (default: none)
    The default distributed bus's Service Map (:class:`ServiceMapSettings`): ``commands`` (service -> channel),
    ``events`` (a list of :class:`EventMappingSettings`), ``services`` (the older single form), ``channels``. Or
    ``{file: path}``: the map is read from that YAML file, relative to the configuration file's folder (the folder
    given to :func:`settings_from_dict`); errors inside it name the file and the key path in it. Without a map, the
    default bus is Ecotone's AMQP distributed bus.
``distributed_buses`` (default: none)
    ``<name>: {service_map: ...}``: more distributed buses by reference name (letters, digits, ``_``), each with its
    own map, or none (the AMQP bus).

The references between these keys are checked once every key has the right type: every channel a map or
``consume`` names is defined (in ``channels`` or a map's ``channels``), a channel defined twice is defined the same
way, the default bus is configured once, and consuming or a distributed bus has a ``service_name``.

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
  ``scan`` (no modules), ``delayed_retries`` (no delayed retries), a channel's ``url``, ``subscription_keys``
  (every event), a nested key (none) and a whole group (all of its defaults); it is an error anywhere else.
* INI files are read without ``%`` interpolation and keep the case of keys; a ``[DEFAULT]`` section with keys is
  an error, as is any section not listed above; a name with a dot cannot be part of a dotted section's name.
  Inline comments are not supported (``#`` or ``;`` after a value are part of the value).

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
coerces as described above; a key may name its own parser (a list of names is not a list of modules), and nested keys
(mappings of names to settings, lists of settings, one optional settings object) get hooks that name each bad entry
by its key or index.  The same parsers, without interpolation or coercion, validate settings objects built
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
from types import MappingProxyType
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
    "OUTBOX_ENDPOINT",
    "OutboxSettings",
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
_SCALARS: Final[tuple[str, ...]] = ("strict", "lenient")
_UNSUBSCRIBED_EVENTS: Final[tuple[str, ...]] = ("drop", "error")
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


def _parse_optional_secret_url(value: Any, read: _Read) -> SecretUrl | None:
    value = _read(value, read)
    if value is None or isinstance(value, str):
        return None if value is None else SecretUrl(value)
    raise _wrong("a URL string or null", value)


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


def _parse_name(value: Any, read: _Read) -> str:
    value = _read(value, read)
    if isinstance(value, str):
        return value.strip()
    raise _wrong("a name string", value)


def _parse_names(value: Any, read: _Read) -> tuple[str, ...]:
    """A list of names (channels, services): a list, or a comma/newline separated string (what INI has)."""
    return _parse_list(value, read, "a list of names or a comma-separated string", _parse_name)


def _parse_key(value: Any, read: _Read) -> str:
    value = _read(value, read)
    if isinstance(value, str):
        return value.strip()
    raise _wrong("a routing key string", value)


def _parse_optional_keys(value: Any, read: _Read) -> tuple[str, ...] | None:
    """Subscription keys: null (or the key left out) for every event, a list (empty: none), or a comma-separated
    string."""
    if value is None:
        return None
    return _parse_list(value, read, "a list of routing keys, a comma-separated string or null", _parse_key)


def _parse_delays(value: Any, read: _Read) -> tuple[int, ...]:
    expected = "a list of positive integers (milliseconds) or a comma-separated string"
    return _parse_list(value, read, expected, _parse_delay)


_PARSERS: Final[Mapping[Any, Callable[[Any, _Read], Any]]] = {
    str: _parse_str,
    SecretUrl: _parse_secret_url,
    BrokerUrl: _parse_broker_url,
    SecretUrl | None: _parse_optional_secret_url,
    str | None: _parse_optional_str,
    int: _parse_int,
    float: _parse_float,
    bool: _parse_bool,
    tuple[str, ...]: _parse_module_names,
    tuple[int, ...]: _parse_delays,
    tuple[str, ...] | None: _parse_optional_keys,
}
"""The parser of each value type a settings field may have (the field's annotation picks it)."""


# --------------------------------------------------------------------------------------------------------------------
# Value checks (run by the classes' validators: on loaded and on directly constructed settings alike)

_Check = Callable[[Any], "str | None"]
"""A value check: None when the value is good, else the problem (a list's check raises :class:`_Problem` naming the
bad item's index)."""

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


def _check_scalars(value: str) -> str | None:
    if value in _SCALARS:
        return None
    return f"must be one of {', '.join(repr(choice) for choice in _SCALARS)}, got {_describe(value)}"


def _check_unsubscribed_events(value: str) -> str | None:
    if value in _UNSUBSCRIBED_EVENTS:
        return None
    return f"must be one of {', '.join(repr(choice) for choice in _UNSUBSCRIBED_EVENTS)}, got {_describe(value)}"


def _check_optional_url(value: str | None) -> str | None:
    return None if value is None else _check_url(value)


_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,255}")
_BUS_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_name(value: str, what: str) -> str | None:
    if _NAME.fullmatch(value):
        return None
    return f"{_describe(value)} is not a {what} name (1 to 255 letters, digits, '.', '_' and '-')"


def _check_channel_name(value: str) -> str | None:
    return _check_name(value, "channel")


def _check_service(value: str) -> str | None:
    return _check_name(value, "service")


def _check_bus_name(value: str) -> str | None:
    if _BUS_NAME.fullmatch(value):
        return None
    return f"{_describe(value)} is not a bus name (letters, digits and '_', not starting with a digit)"


def _each(check: Callable[[str], str | None]) -> _Check:
    """The check of every item of a list, naming the first bad one by its index."""

    def check_all(values: tuple[str, ...] | None) -> str | None:
        for index, value in enumerate(values or ()):
            problem = check(value)
            if problem is not None:
                raise _Problem(problem, f"[{index}]")
        return None

    return check_all


def _check_subscription_key(value: str) -> str | None:
    if value and not any(c.isspace() for c in value):
        return None
    return f"{_describe(value)} is not a routing key or glob (non-empty, no whitespace)"


def _validator(check: _Check | None) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator: the value has the field's type (its parser, without coercion) and passes ``check``."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        parse = attribute.metadata.get(_PARSE) or _PARSERS[attribute.type]
        try:
            parse(value, None)
        except _Problem as exc:
            raise _FieldError(type(instance), f"{attribute.name}{exc.at}", exc.problem) from None
        try:
            problem = check(value) if check is not None else None
        except _Problem as exc:  # a list's check names the bad item
            raise _FieldError(type(instance), f"{attribute.name}{exc.at}", exc.problem) from None
        if problem is not None:
            raise _FieldError(type(instance), attribute.name, problem)

    return validate


def _secret_url(value: str) -> SecretUrl:
    """The converter of a key that may hold a password (a value of another type is left to the validator); a list or
    tuple of strings, as ``transport.url`` takes in code, is joined with ``;``."""
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return SecretUrl(";".join(value))
    return SecretUrl(value) if isinstance(value, str) else value


_DATABASE_DIALECTS: Final = ("postgresql", "postgres", "sqlite")
_TABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


def _check_database_url(value: str) -> str | None:
    scheme, separator, _ = value.partition("://")
    if separator and scheme.partition("+")[0] in _DATABASE_DIALECTS:
        return None
    return (
        "expected a PostgreSQL or SQLite URL (postgresql://user@host:5432/database, sqlite:///path/to/file.sqlite3), "
        f"got {mask_url(value)!r}"
    )


def _check_table_name(value: str) -> str | None:
    if _TABLE_NAME.fullmatch(value):
        return None
    return (
        "must be a table name of letters, digits and '_' (not starting with a digit, at most 48 characters), "
        f"got {_describe(value)}"
    )


_PARSE: Final = "container_messaging.parse"
_NESTED: Final = "container_messaging.nested"


def _option(
    default: Any,
    check: _Check | None = None,
    *,
    secret: bool = False,
    parse: Callable[[Any, _Read], Any] | None = None,
) -> Any:
    """One configuration key: its default and its check (its type is the field's annotation).

    A ``secret`` key (a URL that may hold a password) is kept as a :class:`SecretUrl`, masked wherever it is shown.
    ``parse`` replaces the parser of the field's type (a list of names is a ``tuple[str, ...]`` like ``scan``, but
    not of module names).
    """
    return attrs.field(
        default=default,
        converter=_secret_url if secret else None,
        validator=_validator(check),
        metadata={_PARSE: parse} if parse is not None else {},
    )


def _required(check: _Check | None = None) -> Any:
    """A key that has no default: leaving it out is an error naming it."""
    return attrs.field(validator=_validator(check))


# Nested keys: a mapping of names to settings (``channels``), a list of settings (``events``), or one optional
# settings object (``service_map``). In code they are checked by type; from a file, hooks made in
# :func:`_settings_converter` structure them and name each bad entry by its key or index.


@attrs.frozen
class _Nested:
    """What a nested key holds: ``kind`` is ``mapping``, ``items`` or ``optional``; ``of`` the settings class (or
    ``str``); ``check`` the check of a mapping's names (or of its ``str`` values, with ``value_check``)."""

    kind: str
    of: type
    what: str
    check: _Check | None = None
    value_check: _Check | None = None


def _read_only(value: Any) -> Any:
    return MappingProxyType(dict(value)) if isinstance(value, Mapping) else value


def _nested_validator(nested: _Nested) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        def fail(at: str, problem: str) -> None:
            raise _FieldError(type(instance), f"{attribute.name}{at}", problem)

        of = nested.of.__name__
        if nested.kind == "optional":
            if value is not None and not isinstance(value, nested.of):
                fail("", f"expected a {of} or None, got {_describe(value)}")
        elif nested.kind == "items":
            if not isinstance(value, tuple):
                fail("", f"expected a tuple of {of}, got {_describe(value)}")
            for index, item in enumerate(value):
                if not isinstance(item, nested.of):
                    fail(f"[{index}]", f"expected a {of}, got {_describe(item)}")
        else:
            if not isinstance(value, Mapping):
                fail("", f"expected a mapping of {nested.what} names to {of}, got {_describe(value)}")
            for name, item in value.items():
                if not isinstance(name, str):
                    fail("", f"expected {nested.what} names as strings, got {_describe(name)}")
                if nested.check is not None and (problem := nested.check(name)) is not None:
                    fail(f".{name}", problem)
                if not isinstance(item, nested.of):
                    fail(f".{name}", f"expected a {of}, got {_describe(item)}")
                if nested.value_check is not None and (problem := nested.value_check(item)) is not None:
                    fail(f".{name}", problem)

    return validate


def _mapping(of: type, what: str, check: _Check, value_check: _Check | None = None) -> Any:
    """A key holding a mapping of names to ``of`` (settings, or ``str``); kept read-only."""
    nested = _Nested("mapping", of, what, check, value_check)
    return attrs.field(
        factory=lambda: MappingProxyType({}),
        converter=_read_only,
        validator=_nested_validator(nested),
        metadata={_NESTED: nested},
        hash=False,
    )


def _items(of: type, what: str) -> Any:
    """A key holding a list of ``of`` settings (a tuple in code)."""
    nested = _Nested("items", of, what)
    return attrs.field(default=(), validator=_nested_validator(nested), metadata={_NESTED: nested})


def _optional(of: type, what: str) -> Any:
    """A key holding one ``of`` settings object, or None."""
    nested = _Nested("optional", of, what)
    return attrs.field(default=None, validator=_nested_validator(nested), metadata={_NESTED: nested})


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
    reply_timeout: float = _option(30.0, _check_positive)
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
    scalars: str = _option("strict", _check_scalars)


@attrs.frozen
class DistributionSettings:
    """Ecotone's Distributed Bus names (``distribution`` group)."""

    exchange: str = _option("ecotone.distributed", _check_not_empty)
    queue_prefix: str = _option("distributed_")
    unsubscribed_events: str = _option("drop", _check_unsubscribed_events)


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


OUTBOX_ENDPOINT: Final = "outbox"
"""The endpoint name of the outbox relay (listed when the outbox is enabled)."""


@attrs.frozen
class OutboxSettings:
    """The outbox and inbox (``outbox`` group; see :mod:`container_messaging.outbox`).

    ``enabled``: whether the container installs the outbox. ``database_url``: the application's database
    (``postgresql://`` uses psycopg 3; ``sqlite:///path``). ``outbox_table`` / ``inbox_table``: the table names.
    ``relay_batch_size``: messages the relay publishes per transaction. ``relay_polling_interval``: seconds the relay
    waits when the outbox is empty. ``retention``: seconds sent messages and inbox records are kept before the relay
    deletes them (longer than any redelivery can take). ``publish_after_commit``: publish right after the commit, in
    the committing process (off: only the relay publishes).
    """

    enabled: bool = _option(False)
    database_url: SecretUrl = _option(  # noqa: RUF009 - a str, immutable
        "sqlite:///.container_messaging/outbox.sqlite3", _check_database_url, secret=True
    )
    outbox_table: str = _option("container_messaging_outbox", _check_table_name)
    inbox_table: str = _option("container_messaging_inbox", _check_table_name)
    relay_batch_size: int = _option(100, _check_at_least_one)
    relay_polling_interval: float = _option(1.0, _check_positive)
    retention: float = _option(7 * 24 * 3600.0, _check_positive)
    publish_after_commit: bool = _option(True)

    def __attrs_post_init__(self) -> None:
        if self.outbox_table.lower() == self.inbox_table.lower():
            problem = f"must differ from outbox_table, both are {self.inbox_table!r}"
            raise _FieldError(type(self), "inbox_table", problem)


@attrs.frozen
class ChannelSettings:
    """A message channel (``channels.<name>``, in a configuration or in a service map): a durable queue named after
    the channel, on the broker of ``url`` (default: ``transport.url``; the other transport settings are shared).

    ``stream``: an event stream instead (Redis URLs only): each event is appended once and every consuming service
    reads it in a consumer group of its own; it carries events only (no command mapping may name it).
    """

    url: SecretUrl | None = _option(None, _check_optional_url, secret=True)  # noqa: RUF009 - a str, immutable
    stream: bool = _option(False)


@attrs.frozen
class EventMappingSettings:
    """An event mapping of a service map (``events[i]``): which events are sent to ``channel``.

    ``subscription_keys``: routing keys or Ecotone globs; None (left out) means every event, an empty list none.
    ``exclude_publishing_services`` / ``include_publishing_services`` (one or the other): the events of those
    publishing services are not sent / are the only ones sent.
    """

    channel: str = _required(_check_channel_name)
    subscription_keys: tuple[str, ...] | None = _option(None, _each(_check_subscription_key))
    exclude_publishing_services: tuple[str, ...] = _option((), _each(_check_service), parse=_parse_names)
    include_publishing_services: tuple[str, ...] = _option((), _each(_check_service), parse=_parse_names)

    def __attrs_post_init__(self) -> None:
        if self.exclude_publishing_services and self.include_publishing_services:
            raise _FieldError(
                EventMappingSettings,
                "include_publishing_services",
                "cannot be used together with exclude_publishing_services: give one or the other",
            )


@attrs.frozen
class ServiceMappingSettings:
    """The older single form of a service map entry (``services[i]``): commands to ``service`` go to ``channel``,
    and so do the events matching ``subscription_keys`` (None: every event; an empty list: none)."""

    service: str = _required(_check_service)
    channel: str = _required(_check_channel_name)
    subscription_keys: tuple[str, ...] | None = _option(None, _each(_check_subscription_key))


@attrs.frozen
class ServiceMapSettings:
    """A service map (``service_map``, or a bus's): where a distributed bus sends what it sends.

    ``commands``: target service -> channel; ``events``: the event mappings; ``services``: the older single form
    (not mixed with the other two); ``channels``: channels the map defines. Given as ``{file: path}``, the map is
    read from that YAML file (relative to the configuration file's folder); ``source`` is then that file (not a key,
    not compared).
    """

    channels: Mapping[str, ChannelSettings] = _mapping(ChannelSettings, "channel", _check_channel_name)
    commands: Mapping[str, str] = _mapping(str, "service", _check_service, _check_channel_name)
    events: tuple[EventMappingSettings, ...] = _items(EventMappingSettings, "event mapping")
    services: tuple[ServiceMappingSettings, ...] = _items(ServiceMappingSettings, "service mapping")
    source: str | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.services and (self.commands or self.events):
            raise _FieldError(
                ServiceMapSettings,
                "services",
                "the older single form (services) and commands/events cannot be mixed in one map: use one form",
            )


@attrs.frozen
class BusSettings:
    """A distributed bus (``distributed_buses.<name>``): with a ``service_map`` it sends where the map says;
    without one it is Ecotone's AMQP distributed bus (the ``distribution`` exchange)."""

    service_map: ServiceMapSettings | None = _optional(ServiceMapSettings, "service map")  # noqa: RUF009 - an attrs field


DEFAULT_BUS: Final = "distributed_bus"
"""The reference name of the default distributed bus (the one injected by type)."""


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
    outbox: OutboxSettings = attrs.field(factory=OutboxSettings)
    channels: Mapping[str, ChannelSettings] = _mapping(ChannelSettings, "channel", _check_channel_name)
    consume: tuple[str, ...] = _option((), _each(_check_channel_name), parse=_parse_names)
    service_map: ServiceMapSettings | None = _optional(ServiceMapSettings, "service map")  # noqa: RUF009 - an attrs field
    distributed_buses: Mapping[str, BusSettings] = _mapping(BusSettings, "bus", _check_bus_name)
    source: str | None = attrs.field(default=None, eq=False)
    folder: str | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        problems = list(self._reference_problems())
        if problems:
            (key, first), *others = problems
            raise _FieldError(Settings, key, "; ".join([first, *(f"{k}: {p}" for k, p in others)]))

    def as_dict(self) -> dict[str, Any]:
        """The settings as a nested plain dict of configuration keys (lists for tuples, dicts for mappings, no
        ``source``/``folder``; an included service map is given by its content).

        The URLs are included as :class:`SecretUrl` values (their text unmasked, their repr masked), so that
        ``settings_from_dict(settings.as_dict())`` gives equal settings and printing the dict shows no password.
        """
        data: dict[str, Any] = _plain(self)
        return data

    def buses(self) -> dict[str, BusSettings]:
        """Every distributed bus by reference name: :data:`DEFAULT_BUS` first (its map is ``service_map``, or
        ``distributed_buses.distributed_bus``), then the others of ``distributed_buses``."""
        default = self.distributed_buses.get(DEFAULT_BUS, BusSettings(self.service_map))
        return {DEFAULT_BUS: default, **{n: b for n, b in self.distributed_buses.items() if n != DEFAULT_BUS}}

    def all_channels(self) -> dict[str, ChannelSettings]:
        """Every channel defined: in ``channels`` and in each service map (a name is defined once, or the same way
        everywhere, which construction checked)."""
        table: dict[str, ChannelSettings] = {}
        for _key, name, channel in self._channel_definitions():
            table.setdefault(name, channel)
        return table

    # -- the references between keys, checked once every key has the right type -----------------------------------

    def _service_maps(self) -> Iterator[tuple[str, ServiceMapSettings]]:
        """Each service map with its key path (and the file it came from, in the path's words)."""
        buses = [("service_map", self.service_map)]
        buses += [
            (f"distributed_buses.{name}.service_map", bus.service_map) for name, bus in self.distributed_buses.items()
        ]
        for key, service_map in buses:
            if service_map is not None:
                yield key, service_map

    def _channel_definitions(self) -> Iterator[tuple[str, str, ChannelSettings]]:
        for name, channel in self.channels.items():
            yield f"channels.{name}", name, channel
        for key, service_map in self._service_maps():
            for name, channel in service_map.channels.items():
                yield f"{key}.channels.{name}{_from(service_map)}", name, channel

    def _reference_problems(self) -> Iterator[tuple[str, str]]:
        """``(key, problem)`` for each reference that does not hold: channels defined twice differently, maps and
        ``consume`` naming undefined channels, the default bus configured twice, consuming without a service name."""
        if self.service_map is not None and DEFAULT_BUS in self.distributed_buses:
            yield (
                f"distributed_buses.{DEFAULT_BUS}",
                "the default bus is configured twice, here and by service_map: keep one",
            )
        first: dict[str, tuple[str, ChannelSettings]] = {}
        for key, name, channel in self._channel_definitions():
            if name not in first:
                first[name] = (key, channel)
            elif first[name][1] != channel:
                yield key, f"channel {name!r} is also defined at {first[name][0]}, differently: define it once"
        defined = ", ".join(sorted(first)) or "none"

        def undefined(channel: str) -> str:
            return f"channel {channel!r} is not defined in channels or in a service map (defined: {defined})"

        for key, service_map in self._service_maps():
            where = _from(service_map)
            for service, target in service_map.commands.items():
                if target not in first:
                    yield f"{key}.commands.{service}{where}", undefined(target)
            for index, event in enumerate(service_map.events):
                if event.channel not in first:
                    yield f"{key}.events[{index}].channel{where}", undefined(event.channel)
            for index, mapping in enumerate(service_map.services):
                if mapping.channel not in first:
                    yield f"{key}.services[{index}].channel{where}", undefined(mapping.channel)
        yield from self._stream_problems(first)
        for index, consumed in enumerate(self.consume):
            if consumed not in first:
                yield f"consume[{index}]", undefined(consumed)
            elif consumed in self.consume[:index]:
                yield f"consume[{index}]", f"channel {consumed!r} is listed twice"
        if self.consume and self.service_name is None:
            yield "consume", "consuming channels needs a configured service_name (the target their commands name)"
        if self.service_name is None:
            for key, _service_map in self._service_maps():
                yield key, "a distributed bus needs a configured service_name (the source of what it sends)"
            for name in self.distributed_buses:
                if self.distributed_buses[name].service_map is None:
                    yield f"distributed_buses.{name}", "a distributed bus needs a configured service_name"

    def _stream_problems(self, first: Mapping[str, tuple[str, ChannelSettings]]) -> Iterator[tuple[str, str]]:
        """Event stream channels on a broker other than Redis, or named as the target of commands."""
        streams = {name for name, (_key, channel) in first.items() if channel.stream}
        for name in sorted(streams):
            key, channel = first[name]
            url = str(channel.url or self.transport.url)
            if url.partition("://")[0] not in {"redis", "rediss"}:
                yield (
                    f"{key}.stream",
                    f"channel {name!r} is an event stream, which needs a Redis broker (redis:// or rediss://), not "
                    f"{mask_url(url)}",
                )
        for key, service_map in self._service_maps():
            where = _from(service_map)
            for service, target in service_map.commands.items():
                if target in streams:
                    yield f"{key}.commands.{service}{where}", _stream_target(target)
            for index, mapping in enumerate(service_map.services):
                if mapping.channel in streams:
                    yield f"{key}.services[{index}].channel{where}", _stream_target(mapping.channel)


def _stream_target(channel: str) -> str:
    return (
        f"channel {channel!r} is an event stream: every consuming service would handle each command sent there; map "
        "commands to a queue channel and the stream under events"
    )


def _from(service_map: ServiceMapSettings) -> str:
    return f" (in {service_map.source})" if service_map.source else ""


def _plain(value: Any) -> Any:
    """Settings as plain data: attrs classes as dicts of their keys, tuples as lists, mappings as dicts."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value)) if f.name not in _NOT_KEYS}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {name: _plain(item) for name, item in value.items()}
    return value


_GROUPS: Final[tuple[type, ...]] = (
    TransportSettings,
    ConversionSettings,
    DistributionSettings,
    RecoverabilitySettings,
    ConsumerSettings,
    DeduplicationSettings,
    OutboxSettings,
)
_NESTED_CLASSES: Final[tuple[type, ...]] = (
    ChannelSettings,
    EventMappingSettings,
    ServiceMappingSettings,
    ServiceMapSettings,
    BusSettings,
)

for _settings_class in (*_GROUPS, *_NESTED_CLASSES, Settings):
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


@attrs.frozen
class _Load:
    """What one load needs besides the data: the converter, the interpolation, and the folder included files are
    relative to (None: the working directory)."""

    converter: cattrs.Converter
    read: Callable[[str], str]
    folder: str | None


def _settings_converter(environ: Mapping[str, str], folder: str | None = None) -> cattrs.Converter:
    """A converter for one load: every value hook interpolates from ``environ``, then parses (coercing); an included
    service map file is found relative to ``folder``."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def read(text: str) -> str:
        return _interpolate(text, environ)

    load = _Load(converter, read, folder)
    for tp, parse in _PARSERS.items():

        def structure(value: Any, _type: Any, parse: Callable[[Any, _Read], Any] = parse) -> Any:
            return parse(value, read)

        if isinstance(tp, type):
            converter.register_structure_hook(tp, structure)
        else:  # a union or a parametrized tuple: matched by equality
            converter.register_structure_hook_func(_is(tp), structure)

    names = {**_group_names(), **{cls: cls.__name__ for cls in _NESTED_CLASSES}}
    for cls in (*_GROUPS, *_NESTED_CLASSES):
        converter.register_structure_hook(cls, _group_hook(load, cls, _what(names[cls])))
    settings_hook = make_dict_structure_fn(Settings, converter, **_overrides(load, Settings))
    converter.register_structure_hook(Settings, settings_hook)
    return converter


def _what(name: str) -> str:
    """``transport`` stays; ``ChannelSettings`` -> ``channel``, ``ServiceMapSettings`` -> ``service map``."""
    if not name.endswith("Settings"):
        return name
    return re.sub(r"(?<!^)([A-Z])", r" \1", name.removesuffix("Settings")).lower()


def _is(expected: Any) -> Callable[[Any], bool]:
    def matches(candidate: Any) -> bool:
        return bool(candidate == expected)

    return matches


def _overrides(load: _Load, cls: type) -> dict[str, Any]:
    """cattrs overrides of ``cls``'s fields: ``source``/``folder`` are not keys; a field with its own parser or a
    nested key gets its hook."""
    overrides: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.name in _NOT_KEYS:
            overrides[field.name] = override(omit=True)
        elif _PARSE in field.metadata:
            overrides[field.name] = override(struct_hook=_parse_hook(load, field.metadata[_PARSE]))
        elif _NESTED in field.metadata:
            overrides[field.name] = override(struct_hook=_nested_hook(load, field.metadata[_NESTED]))
    return overrides


def _parse_hook(load: _Load, parse: Callable[[Any, _Read], Any]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _type: Any) -> Any:
        return parse(value, load.read)

    return hook


def _group_hook(load: _Load, cls: type[_T], name: str) -> Callable[[Any, Any], _T]:
    """A group's hook: null means all of its defaults; anything else but a mapping is an error."""
    structure = make_dict_structure_fn(cls, load.converter, **_overrides(load, cls))

    def hook(value: Any, _type: Any) -> _T:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _Problem(f"expected a mapping of {name} settings, got {_describe(value)}")
        return structure(value, cls)

    return hook


class _EntryErrors(Exception):
    """The bad entries of a nested key: ``(segment, error)`` with segments like ``.billing`` or ``[2]``."""

    def __init__(self, errors: list[tuple[str, BaseException]]) -> None:
        super().__init__(f"{len(errors)} bad entries")
        self.errors = errors


_ENTRY_ERRORS: Final = (ClassValidationError, _Problem, _FieldError, _EntryErrors, ConfigurationError)


def _nested_hook(load: _Load, nested: _Nested) -> Callable[[Any, Any], Any]:
    """The hook of a nested key (see :class:`_Nested`): every bad entry is named by its key or index."""
    converter, of = load.converter, nested.of

    def entry(value: Any) -> Any:
        if of is str:
            text = _parse_str(value, load.read)
            problem = nested.value_check(text) if nested.value_check is not None else None
            if problem is not None:
                raise _Problem(problem)
            return text
        if of is ServiceMapSettings:
            return _service_map(load, value)
        return converter.structure(value, of)

    def mapping(value: Any, _type: Any) -> Any:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, Mapping):
            raise _Problem(f"expected a mapping of {nested.what} names to their settings, got {_describe(value)}")
        result: dict[str, Any] = {}
        errors: list[tuple[str, BaseException]] = []
        for name, item in value.items():
            if not isinstance(name, str):
                errors.append((f"[{name!r}]", _Problem(f"a {nested.what} name must be a string")))
                continue
            problem = nested.check(name) if nested.check is not None else None
            if problem is not None:
                errors.append((f".{name}", _Problem(problem)))
                continue
            try:
                result[name] = entry(item)
            except _ENTRY_ERRORS as exc:
                errors.append((f".{name}", exc))
        if errors:
            raise _EntryErrors(errors)
        return MappingProxyType(result)

    def items(value: Any, _type: Any) -> Any:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise _Problem(f"expected a list of {nested.what}s, got {_describe(value)}")
        result: list[Any] = []
        errors: list[tuple[str, BaseException]] = []
        for index, item in enumerate(value):
            try:
                result.append(entry(item))
            except _ENTRY_ERRORS as exc:
                errors.append((f"[{index}]", exc))
        if errors:
            raise _EntryErrors(errors)
        return tuple(result)

    def optional(value: Any, _type: Any) -> Any:
        return None if value is None else entry(value)

    return {"mapping": mapping, "items": items, "optional": optional}[nested.kind]


_INCLUDE: Final = "file"


def _service_map(load: _Load, value: Any) -> ServiceMapSettings:
    """A service map given inline, or ``{file: path}``: read from that YAML file (relative to the configuration
    file's folder), whose errors are named by the file and the key path inside it."""
    if not isinstance(value, Mapping) or _INCLUDE not in value:
        return load.converter.structure(value, ServiceMapSettings)
    others = sorted(str(key) for key in value if key != _INCLUDE)
    if others:
        raise _Problem(f"a service map read from a file takes no other keys here, found {', '.join(others)}")
    try:
        given = _parse_str(value[_INCLUDE], load.read)
    except _Problem as exc:
        raise _Problem(exc.problem, f".{_INCLUDE}") from None
    path = os.path.normpath(os.path.join(load.folder or os.getcwd(), given))
    if PurePath(path).suffix.lower() not in _YAML_EXTENSIONS:
        raise _Problem(f"{path}: a service map file is YAML (.yaml or .yml)", f".{_INCLUDE}")
    try:
        data = _yaml_data(path)
    except ConfigurationError as exc:
        raise _Problem(str(exc), f".{_INCLUDE}") from exc
    if isinstance(data, Mapping) and _INCLUDE in data:
        raise _Problem(f"{path}: {_INCLUDE}: an included service map cannot include another", f".{_INCLUDE}")
    try:
        service_map = load.converter.structure({} if data is None else data, ServiceMapSettings)
    except _ENTRY_ERRORS as exc:
        raise _Problem(f"{path}: {'; '.join(_problems(exc))}", f".{_INCLUDE}") from exc
    return attrs.evolve(service_map, source=path)


def _problems(exc: BaseException, prefix: str = "") -> Iterator[str]:
    """``key.path: problem`` for each error cattrs collected (per level: unknown keys and checks first, then keys)."""
    if isinstance(exc, ClassValidationError):
        with_key, without_key = exc.group_exceptions()
        for error in without_key:
            yield from _problems(error, prefix)
        for error, note in with_key:
            yield from _keyed(error, f"{prefix}{note.name}")
    elif isinstance(exc, _EntryErrors):
        for segment, entry_error in exc.errors:
            yield from _keyed(entry_error, f"{prefix.rstrip('.')}{segment}")
    elif isinstance(exc, ForbiddenExtraKeysError):
        unknown = sorted(exc.extra_fields, key=str)
        shown = ", ".join(repr(f"{prefix}{key}") if isinstance(key, str) else f"{prefix}{key!r}" for key in unknown)
        plural = "s" if len(unknown) > 1 else ""
        yield f"unknown key{plural} {shown} (known: {', '.join(sorted(_keys(exc.cl)))})"
    elif isinstance(exc, _FieldError):
        yield f"{prefix}{exc.field}: {exc.problem}"
    else:
        yield from _leaf(exc, prefix.rstrip("."))


def _keyed(error: BaseException, key: str) -> Iterator[str]:
    """The problems of the value at ``key``."""
    if isinstance(error, ClassValidationError | _EntryErrors | _FieldError):
        yield from _problems(error, f"{key}.")
    else:
        yield from _leaf(error, key)


def _leaf(exc: BaseException, key: str) -> Iterator[str]:
    if isinstance(exc, _Problem):
        yield f"{key}{exc.at}: {exc.problem}"
    elif isinstance(exc, KeyError):  # cattrs: a key without a default is missing
        yield f"{key}: missing (it has no default)"
    elif isinstance(exc, ConfigurationError):
        yield f"{key}: {exc}"
    else:  # not raised by this module's parsers: a bug, shown by its type only (its text might quote a value)
        yield f"{key}: cannot be read ({type(exc).__name__})"


def settings_from_dict(
    data: Mapping[str, Any],
    source: str = "<dict>",
    *,
    environ: Mapping[str, str] | None = None,
    folder: str | None = None,
) -> Settings:
    """Build :class:`Settings` from a parsed configuration mapping (the shape of :meth:`Settings.as_dict`).

    String values are interpolated from ``environ`` (default: ``os.environ``), then coerced and validated;
    ``source`` names the origin in error messages and is stored on the result. A service map given as
    ``{file: path}`` is read relative to ``folder`` (default: the working directory).
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source}: the top level must be a mapping of settings, got {_describe(data)}")
    converter = _settings_converter(os.environ if environ is None else environ, folder)
    try:
        settings = converter.structure(data, Settings)
    except ClassValidationError as exc:
        raise ConfigurationError(f"{source}: {'; '.join(_problems(exc))}") from exc
    except _FieldError as exc:  # Settings' own validators, when every key was read
        raise ConfigurationError(f"{source}: {exc.field}: {exc.problem}") from exc
    return attrs.evolve(settings, source=source, folder=folder)


# --------------------------------------------------------------------------------------------------------------------
# Files


def _from_file(data: Any, source: str, environ: Mapping[str, str] | None) -> Settings:
    return settings_from_dict(data, source, environ=environ, folder=os.path.dirname(os.path.abspath(source)))


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
    data = _yaml_data(source)
    return _from_file({} if data is None else data, source, environ)


def _yaml_data(source: str) -> Any:
    """A YAML file's data (``yaml.safe_load``: no tag builds an object); errors name the file, never a value."""
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
    return data


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
    known_sections = ", ".join(
        [f"[{name}]" for name in sorted({_INI_MAIN_SECTION, *groups})]
        + ["[channels.NAME]", "[service_map]", "[service_map.commands]", "[service_map.channels.NAME]"]
        + ["[distributed_buses.NAME]", "[distributed_buses.NAME.service_map]"]
    )
    if parser.defaults():
        raise ConfigurationError(f"{source}: unknown section [{parser.default_section}] (known: {known_sections})")
    data: dict[str, Any] = {}
    for section in parser.sections():
        items = dict(parser.items(section))
        parts = section.split(".")
        if section == _INI_MAIN_SECTION:
            for key in items:
                if key in groups or key in _INI_NESTED:
                    raise ConfigurationError(
                        f"{source}: {key}: in an INI file the {key} settings go in a [{key}...] section"
                    )
            data.update(items)
        elif section in groups:
            data[section] = items
        elif parts[0] in _INI_NESTED and (len(parts) > 1 or parts[0] == "service_map") and all(parts):
            _put(data, parts, items, source, section)
        else:
            raise ConfigurationError(f"{source}: unknown section [{section}] (known: {known_sections})")
    return _from_file(data, source, environ)


#: The nested keys an INI file gives in dotted sections: ``[channels.NAME]``, ``[service_map.commands]``...
_INI_NESTED: Final = ("channels", "service_map", "distributed_buses")


def _put(data: dict[str, Any], path: list[str], items: dict[str, str], source: str, section: str) -> None:
    """Puts a dotted section's keys at its path in ``data`` (``[a.b]`` -> ``data[a][b]``)."""
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigurationError(f"{source}: section [{section}]: {part!r} is already a key, not a section")
        node = child
    existing = node.setdefault(path[-1], {})
    if not isinstance(existing, dict):
        raise ConfigurationError(f"{source}: section [{section}]: {path[-1]!r} is already a key, not a section")
    for key, value in items.items():
        if key in existing:
            raise ConfigurationError(f"{source}: section [{section}]: key {key!r} is also a section of its own")
        existing[key] = value


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
