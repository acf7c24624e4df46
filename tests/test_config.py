"""Tests for container_messaging.config: loading, interpolation, coercion, validation and masking."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from container_messaging.config import (
    CONFIG_ENV,
    ConversionSettings,
    DistributionSettings,
    Settings,
    TransportSettings,
    config_path,
    load_ini,
    load_settings,
    load_yaml,
    settings_from_dict,
)
from container_messaging.errors import ConfigurationError
from container_messaging.redaction import mask_url

FULL_YAML = """\
service_name: billing
scan:
  - billing.handlers
  - billing.projections
transport:
  url: pyamqp://guest:secret@127.0.0.1:5672//
  data_folder: var/messaging
  polling_interval: 0.25
  prefetch_count: 20
  auto_declare: false
  confirm_publish: no
  connect_timeout: 2
  heartbeat: 0
  ssl: true
conversion:
  json_keys: as_is
  forbid_unknown_keys: true
distribution:
  exchange: my.exchange
  queue_prefix: dist_
"""

FULL_INI = """\
[container_messaging]
service_name = billing
scan = billing.handlers,
       billing.projections

[transport]
url = pyamqp://guest:secret@127.0.0.1:5672//
data_folder = var/messaging
polling_interval = 0.25
prefetch_count = 20
auto_declare = false
confirm_publish = no
connect_timeout = 2
heartbeat = 0
ssl = true

[conversion]
json_keys = as_is
forbid_unknown_keys = yes

[distribution]
exchange = my.exchange
queue_prefix = dist_
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------------------------
# Loading and defaults


def test_yaml_and_ini_give_equal_settings(tmp_path: Path) -> None:
    """Equivalent YAML and INI files load to equal Settings with every key set as written."""
    from_yaml = load_settings(write(tmp_path, "app.yaml", FULL_YAML))
    from_ini = load_settings(write(tmp_path, "app.ini", FULL_INI))
    assert from_yaml == from_ini
    assert from_yaml == Settings(
        service_name="billing",
        scan=("billing.handlers", "billing.projections"),
        transport=TransportSettings(
            url="pyamqp://guest:secret@127.0.0.1:5672//",
            data_folder="var/messaging",
            polling_interval=0.25,
            prefetch_count=20,
            auto_declare=False,
            confirm_publish=False,
            connect_timeout=2.0,
            heartbeat=0,
            ssl=True,
        ),
        conversion=ConversionSettings(json_keys="as_is", forbid_unknown_keys=True),
        distribution=DistributionSettings(exchange="my.exchange", queue_prefix="dist_"),
    )


def test_source_records_the_file(tmp_path: Path) -> None:
    """The loaded Settings record the path they were loaded from in `source`."""
    path = write(tmp_path, "app.yml", "service_name: billing\n")
    assert load_settings(path).source == str(path)


def test_defaults() -> None:
    """An empty mapping gives the documented defaults."""
    settings = settings_from_dict({})
    assert settings.service_name is None
    assert settings.scan == ()
    assert settings.transport == TransportSettings(
        url="embedded://",
        data_folder=".container_messaging",
        polling_interval=0.05,
        prefetch_count=10,
        auto_declare=True,
        confirm_publish=True,
        connect_timeout=5.0,
        heartbeat=30,
        ssl=False,
    )
    assert settings.conversion == ConversionSettings(json_keys="camelCase", forbid_unknown_keys=False)
    assert settings.distribution == DistributionSettings(exchange="ecotone.distributed", queue_prefix="distributed_")
    assert settings == Settings()


@pytest.mark.parametrize("name", ["empty.yaml", "empty.ini"])
def test_empty_file_gives_defaults(tmp_path: Path, name: str) -> None:
    """An empty YAML or INI file gives the default Settings."""
    assert load_settings(write(tmp_path, name, "")) == Settings()


def test_yaml_null_group_gives_group_defaults(tmp_path: Path) -> None:
    """A YAML group whose keys are all commented out (null) takes that group's defaults."""
    path = write(tmp_path, "app.yaml", "transport:\n  # url: memory://\nscan:\n")
    settings = load_yaml(path)
    assert settings.transport == TransportSettings()
    assert settings.scan == ()


def test_cfg_extension_is_ini(tmp_path: Path) -> None:
    """A .cfg file is read as INI."""
    path = write(tmp_path, "app.cfg", "[container_messaging]\nservice_name = billing\n")
    assert load_settings(path).service_name == "billing"


def test_load_ini_and_load_yaml_directly(tmp_path: Path) -> None:
    """load_ini and load_yaml read their format whatever the file's extension."""
    assert load_ini(write(tmp_path, "a.txt", "[container_messaging]\nservice_name = a\n")).service_name == "a"
    assert load_yaml(write(tmp_path, "b.txt", "service_name: b\n")).service_name == "b"


def test_relative_data_folder_kept_as_written(tmp_path: Path) -> None:
    """A relative data_folder is not resolved."""
    path = write(tmp_path, "app.yaml", "transport:\n  data_folder: ./data/queues\n")
    assert load_settings(path).transport.data_folder == "./data/queues"


@pytest.mark.parametrize("url", ["amqps://guest:pw@host:5671//", "rediss://:pw@host:6380/0"])
def test_tls_schemes_imply_ssl(url: str) -> None:
    """amqps:// and rediss:// URLs give ssl=True even when ssl is false."""
    settings = settings_from_dict({"transport": {"url": url, "ssl": False}})
    assert settings.transport.ssl is True


# ---------------------------------------------------------------------------------------------------------------------
# INI lists


@pytest.mark.parametrize(
    "value",
    [
        "a.b, c.d,e",
        "\n    a.b\n    c.d\n    e",
        "a.b,\n    c.d,\n    e,",
        "\n    a.b, c.d\n\n    e",
    ],
)
def test_ini_scan_list(tmp_path: Path, value: str) -> None:
    """INI scan lists may separate names with commas, newlines or both, ignoring blanks."""
    path = tmp_path / "app.ini"
    path.write_text(f"[container_messaging]\nscan = {value}\n", encoding="utf-8")
    assert load_settings(path).scan == ("a.b", "c.d", "e")


def test_yaml_scan_as_string() -> None:
    """A scan string in a mapping is split on commas like an INI value."""
    assert settings_from_dict({"scan": "a, b.c"}).scan == ("a", "b.c")


def test_ini_has_no_percent_interpolation(tmp_path: Path) -> None:
    """A '%' in an INI value is kept literally."""
    path = write(tmp_path, "app.ini", "[transport]\nurl = amqp://u:p%%40ss%(x)s@host//\n")
    assert load_settings(path).transport.url == "amqp://u:p%%40ss%(x)s@host//"


# ---------------------------------------------------------------------------------------------------------------------
# Environment interpolation


def test_interpolation_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """${VAR} is replaced by the environment variable's value, several times in one string."""
    monkeypatch.setenv("CM_USER", "alice")
    monkeypatch.setenv("CM_PASSWORD", "s3cret")
    path = write(tmp_path, "app.yaml", "transport:\n  url: pyamqp://${CM_USER}:${CM_PASSWORD}@host//\n")
    assert load_settings(path).transport.url == "pyamqp://alice:s3cret@host//"


def test_interpolation_default_used_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """${VAR:default} gives the default when VAR is unset, and ${VAR:} gives an empty string."""
    monkeypatch.delenv("CM_HOST", raising=False)
    monkeypatch.delenv("CM_SUFFIX", raising=False)
    settings = settings_from_dict({"transport": {"url": "amqp://${CM_HOST:127.0.0.1}:5672//${CM_SUFFIX:}"}})
    assert settings.transport.url == "amqp://127.0.0.1:5672//"


def test_interpolation_variable_wins_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """${VAR:default} gives VAR's value when VAR is set."""
    monkeypatch.setenv("CM_HOST", "rabbit")
    settings = settings_from_dict({"transport": {"url": "amqp://${CM_HOST:127.0.0.1}//"}})
    assert settings.transport.url == "amqp://rabbit//"


def test_interpolation_before_coercion_in_ini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interpolated INI values are coerced to int, bool and tuple after substitution."""
    monkeypatch.setenv("CM_PREFETCH", "42")
    monkeypatch.setenv("CM_SCAN", "x.y, z")
    path = write(
        tmp_path,
        "app.ini",
        "[container_messaging]\nscan = ${CM_SCAN}\n[transport]\nprefetch_count = ${CM_PREFETCH}\nssl = ${CM_SSL:on}\n",
    )
    settings = load_settings(path)
    assert settings.scan == ("x.y", "z")
    assert settings.transport.prefetch_count == 42
    assert settings.transport.ssl is True


def test_interpolation_in_yaml_list_items(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each string in a YAML scan list is interpolated."""
    monkeypatch.setenv("CM_PACKAGE", "billing")
    assert settings_from_dict({"scan": ["${CM_PACKAGE}.handlers"]}).scan == ("billing.handlers",)


def test_interpolation_uses_explicit_environ() -> None:
    """An explicit environ mapping replaces os.environ for interpolation."""
    settings = settings_from_dict({"service_name": "${NAME}"}, environ={"NAME": "orders"})
    assert settings.service_name == "orders"


def test_escaped_reference_is_literal() -> None:
    """$${ stands for a literal ${ and is not interpolated."""
    settings = settings_from_dict({"distribution": {"queue_prefix": "q_$${NOT_A_VAR}_"}}, environ={})
    assert settings.distribution.queue_prefix == "q_${NOT_A_VAR}_"


def test_missing_variable_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset variable without a default is an error naming the file, the key path and the variable."""
    monkeypatch.delenv("CM_MISSING_PASSWORD", raising=False)
    path = write(tmp_path, "app.yaml", "transport:\n  url: amqp://guest:${CM_MISSING_PASSWORD}@host//\n")
    message = error_of(path)
    assert str(path) in message
    assert "transport.url" in message
    assert "CM_MISSING_PASSWORD" in message


def test_malformed_reference_error(tmp_path: Path) -> None:
    """An unterminated ${ is an error naming the file and the key path."""
    path = write(tmp_path, "app.ini", "[distribution]\nexchange = ex_${UNCLOSED\n")
    message = error_of(path)
    assert str(path) in message
    assert "distribution.exchange" in message


# ---------------------------------------------------------------------------------------------------------------------
# File-level errors


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is an error naming the path and saying there is no such file."""
    path = tmp_path / "absent.yaml"
    message = error_of(path)
    assert str(path) in message
    assert "no such file" in message


def test_unknown_extension(tmp_path: Path) -> None:
    """An unknown extension is an error naming the file and the known extensions."""
    path = write(tmp_path, "app.toml", "service_name = 'x'\n")
    message = error_of(path)
    assert str(path) in message
    for extension in (".yaml", ".yml", ".ini", ".cfg"):
        assert extension in message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line of the problem."""
    path = write(tmp_path, "app.yaml", "service_name: billing\ntransport:\n  url: [unclosed\n  prefetch_count: 3\n")
    message = error_of(path)
    assert str(path) in message
    assert "line 4" in message


def test_ini_syntax_error(tmp_path: Path) -> None:
    """An INI syntax error names the file and the line."""
    path = write(tmp_path, "app.ini", "[container_messaging]\nservice_name = billing\nthis is not ini\n")
    message = error_of(path)
    assert str(path) in message
    assert "line 3" in message


def test_ini_key_outside_section(tmp_path: Path) -> None:
    """An INI key before any section header is an error naming the file."""
    path = write(tmp_path, "app.ini", "service_name = billing\n")
    assert str(path) in error_of(path)


def test_ini_duplicate_key(tmp_path: Path) -> None:
    """A key repeated in one INI section is an error naming the file and the key."""
    path = write(tmp_path, "app.ini", "[transport]\nheartbeat = 1\nheartbeat = 2\n")
    message = error_of(path)
    assert str(path) in message
    assert "heartbeat" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_top_level_must_be_mapping(tmp_path: Path, text: str) -> None:
    """A YAML document that is not a mapping is an error naming the file."""
    path = write(tmp_path, "app.yaml", text)
    message = error_of(path)
    assert str(path) in message
    assert "mapping" in message


def test_dict_top_level_must_be_mapping() -> None:
    """settings_from_dict refuses a non-mapping and names <dict>."""
    with pytest.raises(ConfigurationError, match="<dict>"):
        settings_from_dict(["service_name"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# Unknown keys and sections


def test_unknown_top_level_key(tmp_path: Path) -> None:
    """An unknown top-level key is an error naming the file, the key and the known keys."""
    path = write(tmp_path, "app.yaml", "transprot:\n  url: memory://\n")
    message = error_of(path)
    assert message == (
        f"{path}: unknown key 'transprot' (known: channels, consume, consumer, conversion, "
        "deduplication, distributed_buses, distribution, outbox, recoverability, scan, service_map, service_name, "
        "transport)"
    )


def test_unknown_top_level_key_in_ini(tmp_path: Path) -> None:
    """An unknown key in [container_messaging] is an error naming the file and the key."""
    path = write(tmp_path, "app.ini", "[container_messaging]\nservice = billing\n")
    message = error_of(path)
    assert str(path) in message
    assert "'service'" in message
    assert "service_name" in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    """An unknown key in a group is an error naming the file, the dotted key and the group's known keys."""
    path = write(tmp_path, "app.yaml", "transport:\n  prefetch: 3\n")
    message = error_of(path)
    assert str(path) in message
    assert "'transport.prefetch'" in message
    assert "prefetch_count" in message


def test_unknown_nested_key_in_ini(tmp_path: Path) -> None:
    """An unknown key in an INI group section is an error naming the file and the dotted key."""
    path = write(tmp_path, "app.ini", "[conversion]\njsonkeys = as_is\n")
    message = error_of(path)
    assert str(path) in message
    assert "'conversion.jsonkeys'" in message


def test_ini_keys_are_case_sensitive(tmp_path: Path) -> None:
    """INI keys keep their case, so URL is not url."""
    path = write(tmp_path, "app.ini", "[transport]\nURL = memory://\n")
    assert "'transport.URL'" in error_of(path)


def test_unknown_ini_section(tmp_path: Path) -> None:
    """An unknown INI section is an error naming the file and the section."""
    path = write(tmp_path, "app.ini", "[transprot]\nurl = memory://\n")
    message = error_of(path)
    assert str(path) in message
    assert "[transprot]" in message


def test_ini_default_section_refused(tmp_path: Path) -> None:
    """An INI [DEFAULT] section with keys is an error naming the file and the section."""
    path = write(tmp_path, "app.ini", "[DEFAULT]\nheartbeat = 3\n[transport]\nurl = memory://\n")
    message = error_of(path)
    assert str(path) in message
    assert "[DEFAULT]" in message


def test_ini_group_as_top_level_key(tmp_path: Path) -> None:
    """A group name used as a key in [container_messaging] is an error naming the file and the key."""
    path = write(tmp_path, "app.ini", "[container_messaging]\ntransport = memory://\n")
    message = error_of(path)
    assert str(path) in message
    assert "transport" in message


def test_group_must_be_mapping(tmp_path: Path) -> None:
    """A YAML group that is not a mapping is an error naming the file and the group."""
    path = write(tmp_path, "app.yaml", "conversion: camelCase\n")
    message = error_of(path)
    assert str(path) in message
    assert "conversion" in message


# ---------------------------------------------------------------------------------------------------------------------
# Type coercion


@pytest.mark.parametrize(
    ("key_path", "value", "expected"),
    [
        ("transport.prefetch_count", "20", 20),
        ("transport.heartbeat", " -0 ", 0),
        ("transport.polling_interval", "1e-2", 0.01),
        ("transport.polling_interval", 2, 2.0),
        ("transport.connect_timeout", "3", 3.0),
        ("transport.ssl", "On", True),
        ("transport.auto_declare", "0", False),
        ("transport.confirm_publish", "YES", True),
        ("conversion.forbid_unknown_keys", "off", False),
        ("scan", ("a", "b"), ("a", "b")),
    ],
)
def test_coercion_accepts(key_path: str, value: object, expected: object) -> None:
    """Strings of integers, numbers and booleans (and tuples for scan) are coerced to the schema's types."""
    group, _, key = key_path.rpartition(".")
    data = {group: {key: value}} if group else {key: value}
    settings = settings_from_dict(data)
    target = getattr(settings, group) if group else settings
    result = getattr(target, key)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("yaml_text", "key_path"),
    [
        ("service_name: 123\n", "service_name"),
        ("transport:\n  url: 5\n", "transport.url"),
        ("distribution:\n  exchange: [a]\n", "distribution.exchange"),
        ("transport:\n  prefetch_count: abc\n", "transport.prefetch_count"),
        ("transport:\n  prefetch_count: 2.5\n", "transport.prefetch_count"),
        ("transport:\n  prefetch_count: true\n", "transport.prefetch_count"),
        ("transport:\n  heartbeat: '1.0'\n", "transport.heartbeat"),
        ("transport:\n  polling_interval: fast\n", "transport.polling_interval"),
        ("transport:\n  polling_interval: true\n", "transport.polling_interval"),
        ("transport:\n  connect_timeout: .inf\n", "transport.connect_timeout"),
        ("transport:\n  ssl: maybe\n", "transport.ssl"),
        ("transport:\n  auto_declare: 1\n", "transport.auto_declare"),
        ("conversion:\n  forbid_unknown_keys: null\n", "conversion.forbid_unknown_keys"),
        ("scan: 7\n", "scan"),
        ("scan: [billing, 7]\n", "scan[1]"),
    ],
)
def test_wrong_type(tmp_path: Path, yaml_text: str, key_path: str) -> None:
    """A value of the wrong type is an error naming the file and the dotted key path."""
    path = write(tmp_path, "app.yaml", yaml_text)
    message = error_of(path)
    assert message.startswith(f"{path}: {key_path}: expected ")


def test_wrong_int_message(tmp_path: Path) -> None:
    """A non-integer prefetch_count gives the documented message."""
    path = write(tmp_path, "billing.yaml", "transport:\n  prefetch_count: abc\n")
    assert error_of(path) == f"{path}: transport.prefetch_count: expected an integer, got 'abc'"


def test_wrong_type_in_ini(tmp_path: Path) -> None:
    """A non-boolean INI value for a bool key is an error naming the file and the key path."""
    path = write(tmp_path, "app.ini", "[transport]\nconfirm_publish = sometimes\n")
    message = error_of(path)
    assert str(path) in message
    assert "transport.confirm_publish" in message


# ---------------------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("yaml_text", "key_path"),
    [
        ("service_name: 'billing service'\n", "service_name"),
        ("service_name: ''\n", "service_name"),
        ("service_name: billing/eu\n", "service_name"),
        ("scan: [billing.handlers, billing-handlers]\n", "scan"),
        ("scan: [billing..handlers]\n", "scan"),
        ("scan: [billing.class]\n", "scan"),
        ("scan: ['']\n", "scan"),
        ("conversion:\n  json_keys: snake_case\n", "conversion.json_keys"),
        ("transport:\n  url: http://host/\n", "transport.url"),
        ("transport:\n  url: rabbitmq\n", "transport.url"),
        ("transport:\n  polling_interval: 0\n", "transport.polling_interval"),
        ("transport:\n  connect_timeout: -1\n", "transport.connect_timeout"),
        ("transport:\n  prefetch_count: 0\n", "transport.prefetch_count"),
        ("transport:\n  heartbeat: -5\n", "transport.heartbeat"),
        ("transport:\n  data_folder: ''\n", "transport.data_folder"),
        ("distribution:\n  exchange: ''\n", "distribution.exchange"),
    ],
)
def test_invalid_value(tmp_path: Path, yaml_text: str, key_path: str) -> None:
    """A value outside its allowed range or pattern is an error naming the file and the dotted key path."""
    path = write(tmp_path, "app.yaml", yaml_text)
    assert error_of(path).startswith(f"{path}: {key_path}: ")


def test_invalid_service_name_in_ini(tmp_path: Path) -> None:
    """An invalid INI service_name is an error naming the file, the key and the value."""
    path = write(tmp_path, "app.ini", "[container_messaging]\nservice_name = billing eu\n")
    message = error_of(path)
    assert str(path) in message
    assert "service_name" in message
    assert "'billing eu'" in message


def test_bad_url_scheme_error_masks_password(tmp_path: Path) -> None:
    """A bad URL scheme names the file, the key and the scheme without revealing the password."""
    path = write(tmp_path, "app.yaml", "transport:\n  url: http://admin:hunter2@host/\n")
    message = error_of(path)
    assert str(path) in message
    assert "transport.url" in message
    assert "'http'" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("scheme", ["embedded", "memory", "pyamqp", "amqp", "amqps", "redis", "rediss"])
def test_known_url_schemes_accepted(scheme: str) -> None:
    """Every documented URL scheme is accepted."""
    url = f"{scheme}://host"
    assert settings_from_dict({"transport": {"url": url}}).transport.url == url


def test_direct_construction_is_validated() -> None:
    """Settings classes built directly reject invalid values, naming the class and the field."""
    with pytest.raises(ConfigurationError, match=r"TransportSettings\.prefetch_count"):
        TransportSettings(prefetch_count=0)
    with pytest.raises(ConfigurationError, match=r"Settings\.service_name"):
        Settings(service_name="no spaces allowed")


# ---------------------------------------------------------------------------------------------------------------------
# Masking


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("pyamqp://guest:guest@127.0.0.1:5672//", "pyamqp://guest:***@127.0.0.1:5672//"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("amqps://user:p%40ss@host:5671/vhost?heartbeat=5", "amqps://user:***@host:5671/vhost?heartbeat=5"),
        ("amqp://user@host//", "amqp://user@host//"),
        ("amqp://host:5672//", "amqp://host:5672//"),
        ("embedded://", "embedded://"),
        ("amqp://u:a@b@host//", "amqp://u:***@host//"),
        ("amqp://u:pa/ss@host//", "amqp://u:***@host//"),
        ("amqp://u:p1@h1//;amqp://u:p2@h2//", "amqp://u:***@h1//;amqp://u:***@h2//"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    """mask_url replaces any password with *** and leaves everything else as written."""
    assert mask_url(url) == masked


def test_masked_url_property_and_reprs() -> None:
    """masked_url hides the password, and neither TransportSettings' nor Settings' repr shows it."""
    settings = settings_from_dict({"transport": {"url": "pyamqp://guest:topsecret@127.0.0.1:5672//"}})
    assert settings.transport.masked_url == "pyamqp://guest:***@127.0.0.1:5672//"
    assert settings.transport.url == "pyamqp://guest:topsecret@127.0.0.1:5672//"
    for text in (repr(settings.transport), repr(settings), str(settings)):
        assert "topsecret" not in text
        assert "pyamqp://guest:***@127.0.0.1:5672//" in text


# ---------------------------------------------------------------------------------------------------------------------
# as_dict


def test_as_dict_round_trip(tmp_path: Path) -> None:
    """as_dict gives plain nested dicts without source that settings_from_dict turns back into equal Settings."""
    settings = load_settings(write(tmp_path, "app.yaml", FULL_YAML))
    data = settings.as_dict()
    assert "source" not in data
    assert data["scan"] == ["billing.handlers", "billing.projections"]
    assert data["transport"]["url"] == "pyamqp://guest:secret@127.0.0.1:5672//"
    assert set(data) == {
        "service_name",
        "scan",
        "transport",
        "conversion",
        "distribution",
        "recoverability",
        "consumer",
        "deduplication",
        "outbox",
        "channels",
        "consume",
        "service_map",
        "distributed_buses",
    }
    assert all(type(data[group]) is dict for group in ("transport", "conversion", "distribution"))
    assert settings_from_dict(data) == settings
    assert settings_from_dict(Settings().as_dict()) == Settings()


def test_source_not_part_of_equality() -> None:
    """Settings that differ only in source are equal."""
    assert settings_from_dict({}, source="a.yaml") == settings_from_dict({}, source="b.ini")


def test_reliability_groups_load_from_yaml_and_ini_alike(tmp_path: Path) -> None:
    """recoverability, consumer and deduplication keys read the same from YAML and INI, delays as a list or a string."""
    yaml_settings = load_settings(
        write(
            tmp_path,
            "r.yaml",
            """
recoverability:
  immediate_retries: 1
  delayed_retries: [200, 400]
consumer:
  max_message_size: 2048
deduplication:
  store: redis://127.0.0.1:6379/1
  window: 60
transport:
  visibility_timeout: 5
  publish_retries: 5
""",
        )
    )
    ini_settings = load_settings(
        write(
            tmp_path,
            "r.ini",
            """
[recoverability]
immediate_retries = 1
delayed_retries = 200, 400
[consumer]
max_message_size = 2048
[deduplication]
store = redis://127.0.0.1:6379/1
window = 60
[transport]
visibility_timeout = 5
publish_retries = 5
""",
        )
    )
    assert yaml_settings == ini_settings
    assert yaml_settings.recoverability.delayed_retries == (200, 400)
    assert yaml_settings.deduplication.window == 60.0


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("recoverability:\n  delayed_retries: [100, -5]\n", "recoverability.delayed_retries"),
        ("recoverability:\n  delayed_retries: [100, soon]\n", "recoverability.delayed_retries[1]"),
        ("recoverability:\n  immediate_retries: -1\n", "recoverability.immediate_retries"),
        ("deduplication:\n  store: mongodb://x\n", "deduplication.store"),
        ("consumer:\n  max_message_size: 0\n", "consumer.max_message_size"),
    ],
)
def test_bad_reliability_values_name_the_key(tmp_path: Path, text: str, culprit: str) -> None:
    """A bad recoverability, consumer or deduplication value is an error naming the file and the key."""
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert culprit in str(info.value)


# ---------------------------------------------------------------------------------------------------------------------
# The engine on cattrs: several errors, strict construction, list items, the file's folder


def test_several_bad_keys_are_reported_together(tmp_path: Path) -> None:
    """Every unknown key and wrong value of a file is in one error, unknown keys first, each with its key path."""
    path = write(
        tmp_path,
        "app.yaml",
        "transprot: {}\nscan: [billing, 7]\ntransport:\n  prefetch_count: abc\n  bogus: 1\n",
    )
    assert error_of(path) == (
        f"{path}: unknown key 'transprot' (known: channels, consume, consumer, conversion, "
        "deduplication, distributed_buses, distribution, outbox, recoverability, scan, service_map, service_name, "
        "transport); scan[1]: expected a module name string, got int 7; "
        "unknown key 'transport.bogus' (known: auto_declare, confirm_publish, connect_timeout, data_folder, "
        "delivery_limit, heartbeat, polling_interval, prefetch_count, publish_retries, queue_type, reply_timeout, "
        "ssl, ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_verify, url, visibility_timeout); "
        "transport.prefetch_count: expected an integer, got 'abc'"
    )


def test_direct_construction_checks_types_without_coercing() -> None:
    """A settings class built in code refuses a string for an integer, naming the class, the field and the value."""
    with pytest.raises(ConfigurationError) as info:
        TransportSettings(prefetch_count="3")  # type: ignore[arg-type]
    assert str(info.value) == "TransportSettings.prefetch_count: expected an integer, got '3'"


def test_list_items_are_interpolated_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each string item of a YAML list of delays is interpolated, then read as an integer."""
    monkeypatch.setenv("CM_FIRST_DELAY", "250")
    settings = settings_from_dict({"recoverability": {"delayed_retries": ["${CM_FIRST_DELAY}", 500]}})
    assert settings.recoverability.delayed_retries == (250, 500)


def test_loaded_settings_record_the_file_folder(tmp_path: Path) -> None:
    """Settings loaded from a file know the file's absolute folder; from a dict they have none; it is not a key."""
    path = write(tmp_path, "app.ini", "[container_messaging]\nservice_name = billing\n")
    settings = load_settings(path)
    assert settings.folder == str(tmp_path.resolve())
    assert settings_from_dict({}).folder is None
    assert "folder" not in settings.as_dict()
    with pytest.raises(ConfigurationError, match="unknown key 'folder'"):
        settings_from_dict({"folder": "x"})


# ---------------------------------------------------------------------------------------------------------------------
# The configuration file's path from the environment


def test_config_path_prefers_the_given_path() -> None:
    """A given path wins over CONTAINER_MESSAGING_CONFIG."""
    assert config_path("given.yaml", environ={CONFIG_ENV: "env.yaml"}) == "given.yaml"


def test_config_path_falls_back_to_the_environment() -> None:
    """Without a given path, CONTAINER_MESSAGING_CONFIG names the file; unset or empty, there is none."""
    assert config_path(None, environ={CONFIG_ENV: "env.yaml"}) == "env.yaml"
    assert config_path("", environ={CONFIG_ENV: "env.yaml"}) == "env.yaml"
    assert config_path(None, environ={CONFIG_ENV: ""}) is None
    assert config_path(None, environ={}) is None


def test_config_path_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit environ, config_path reads os.environ."""
    monkeypatch.setenv(CONFIG_ENV, "from-os-environ.yaml")
    assert config_path() == "from-os-environ.yaml"


# ---------------------------------------------------------------------------------------------------------------------
# Channels, service maps, several buses

SHARED_MAP = """\
channels:
  distributed_billing: {url: "redis://:s3cret@127.0.0.1:6379/0"}
  distributed_ticket: null
commands:
  billing: distributed_billing
  ticket: distributed_ticket
events:
  - channel: distributed_ticket
    subscription_keys: ["billing.*"]
  - channel: distributed_billing
    exclude_publishing_services: [ticket]
"""


def test_a_service_map_file_is_read_relative_to_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """service_map: {file: ../shared/map.yaml} reads the map from that file, relative to the configuration file's
    folder whatever the working directory, and a YAML and an INI configuration including it say the same."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "ticket").mkdir()
    write(tmp_path / "shared", "map.yaml", SHARED_MAP)
    yaml_path = write(
        tmp_path / "ticket",
        "ticket.yaml",
        "service_name: ticket\nservice_map: {file: ../shared/map.yaml}\nconsume: [distributed_ticket]\n",
    )
    ini_path = write(
        tmp_path / "ticket",
        "ticket.ini",
        """\
        [container_messaging]
        service_name = ticket
        consume = distributed_ticket

        [service_map]
        file = ../shared/map.yaml
        """,
    )
    monkeypatch.chdir(tmp_path / "shared")  # not the configuration's folder
    settings = load_settings(yaml_path)
    assert settings == load_settings(ini_path)
    service_map = settings.service_map
    assert service_map is not None
    assert service_map.source == str(tmp_path / "shared" / "map.yaml")
    assert dict(service_map.commands) == {"billing": "distributed_billing", "ticket": "distributed_ticket"}
    assert service_map.events[0].subscription_keys == ("billing.*",)
    assert service_map.events[1].subscription_keys is None  # left out: every event
    assert service_map.events[1].exclude_publishing_services == ("ticket",)
    assert settings.all_channels()["distributed_billing"].url == "redis://:s3cret@127.0.0.1:6379/0"
    assert "s3cret" not in repr(settings)
    assert settings_from_dict(settings.as_dict()) == settings  # the included map by its content


def test_errors_in_an_included_map_name_the_file_and_the_key_inside_it(tmp_path: Path) -> None:
    """A bad key in an included map file is reported with the including key, the included file and the key path
    inside it; a missing included file names the path it looked for."""
    write(tmp_path, "broken.yaml", "commands: {billing: 3}\nevents: [{subscription_keys: [a]}]\n")
    path = write(
        tmp_path,
        "app.yaml",
        """\
        service_name: x
        service_map: {file: broken.yaml}
        distributed_buses:
          other: {service_map: {file: missing.yaml}}
        """,
    )
    assert error_of(path) == (
        f"{path}: service_map.file: {tmp_path / 'broken.yaml'}: commands.billing: expected a string, got int 3; "
        "events[0].channel: missing (it has no default); "
        f"distributed_buses.other.service_map.file: {tmp_path / 'missing.yaml'}: no such file"
    )


def test_references_between_keys_are_checked_together(tmp_path: Path) -> None:
    """A channel defined twice differently, a map or consume naming an undefined channel, the default bus configured
    twice, and consuming without a service name: each is named by its key, all in one error."""
    write(tmp_path, "map.yaml", SHARED_MAP)
    path = write(
        tmp_path,
        "app.yaml",
        """\
        service_map: {file: map.yaml}
        channels:
          distributed_billing: {url: "memory://"}
        consume: [distributed_ticket, nowhere]
        distributed_buses:
          distributed_bus: {}
          internal: {service_map: {commands: {audit: audit_in}}}
        """,
    )
    message = error_of(path)
    assert message.startswith(f"{path}: distributed_buses.distributed_bus: the default bus is configured twice")
    for part in (
        f"service_map.channels.distributed_billing (in {tmp_path / 'map.yaml'}): channel 'distributed_billing' is "
        "also defined at channels.distributed_billing, differently: define it once",
        "distributed_buses.internal.service_map.commands.audit: channel 'audit_in' is not defined in channels or in "
        "a service map (defined: distributed_billing, distributed_ticket)",
        "consume[1]: channel 'nowhere' is not defined",
        "consume: consuming channels needs a configured service_name",
        "service_map: a distributed bus needs a configured service_name",
    ):
        assert part in message


def test_map_entries_are_checked_by_their_index_and_name(tmp_path: Path) -> None:
    """Bad names, a non-mapping entry, include and exclude together, and the older form mixed with the newer: each
    named by its path."""
    path = write(
        tmp_path,
        "app.yaml",
        """\
        service_name: x
        channels: {"bad name": {}, good: null}
        service_map:
          commands: {"x y": good}
          events:
            - 5
            - {channel: good, exclude_publishing_services: [a], include_publishing_services: b}
            - {channel: good, subscription_keys: ["a b"]}
        distributed_buses:
          9bus: {}
          other: {service_map: {services: [{service: s, channel: good}], commands: {s: good}}}
        """,
    )
    message = error_of(path)
    for part in (
        "channels.bad name: 'bad name' is not a channel name",
        "service_map.commands.x y: 'x y' is not a service name",
        "service_map.events[0]: expected a mapping of event mapping settings, got int 5",
        "service_map.events[1].include_publishing_services: cannot be used together with exclude_publishing_services",
        "service_map.events[2].subscription_keys[0]: 'a b' is not a routing key or glob",
        "distributed_buses.9bus: '9bus' is not a bus name",
        "distributed_buses.other.service_map.services: the older single form (services) and commands/events cannot "
        "be mixed",
    ):
        assert part in message, part


def test_ini_gives_channels_and_buses_in_dotted_sections(tmp_path: Path) -> None:
    """[channels.NAME], [service_map.commands] and [distributed_buses.NAME.service_map] put their keys at that path;
    an undotted [channels] is an unknown section listing the known forms."""
    write(tmp_path, "map.yaml", SHARED_MAP)
    path = write(
        tmp_path,
        "app.ini",
        """\
        [container_messaging]
        service_name = billing
        consume = distributed_billing, local

        [channels.local]
        url = memory://

        [service_map.commands]
        ticket = local

        [distributed_buses.internal_bus.service_map]
        file = map.yaml

        [distributed_buses.legacy_bus]
        """,
    )
    settings = load_settings(path)
    assert settings.consume == ("distributed_billing", "local")
    assert settings.all_channels()["local"].url == "memory://"
    assert settings.service_map is not None and dict(settings.service_map.commands) == {"ticket": "local"}
    buses = settings.buses()
    assert list(buses) == ["distributed_bus", "internal_bus", "legacy_bus"]
    assert buses["legacy_bus"].service_map is None
    internal = buses["internal_bus"].service_map
    assert internal is not None and internal.source == str(tmp_path / "map.yaml")
    bad = write(tmp_path, "bad.ini", "[container_messaging]\nservice_name = x\n[channels]\na = b\n")
    assert "unknown section [channels] (known: " in error_of(bad)
    assert "[channels.NAME]" in error_of(bad)


def test_new_options_of_conversion_and_distribution_are_checked(tmp_path: Path) -> None:
    """conversion.scalars is strict or lenient, distribution.unsubscribed_events drop or error (the defaults are
    strict and drop)."""
    assert (Settings().conversion.scalars, Settings().distribution.unsubscribed_events) == ("strict", "drop")
    path = write(tmp_path, "app.yaml", "conversion: {scalars: loose}\ndistribution: {unsubscribed_events: raise}\n")
    assert error_of(path) == (
        f"{path}: conversion.scalars: must be one of 'strict', 'lenient', got 'loose'; "
        "distribution.unsubscribed_events: must be one of 'drop', 'error', got 'raise'"
    )


def test_settings_built_in_code_check_channels_and_maps() -> None:
    """Settings built in code check the nested keys by type and name and the references between them."""
    from container_messaging.config import ChannelSettings, ServiceMapSettings

    with pytest.raises(ConfigurationError, match=r"Settings\.channels\.a: expected a ChannelSettings, got 'x'"):
        Settings(channels={"a": "x"})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match=r"ServiceMapSettings\.commands\.b: 'c d' is not a channel name"):
        ServiceMapSettings(commands={"b": "c d"})
    with pytest.raises(ConfigurationError, match=r"Settings\.consume\[0\]: channel 'a' is not defined"):
        Settings(service_name="x", consume=("a",))
    settings = Settings(service_name="x", channels={"a": ChannelSettings()}, consume=("a",))
    assert settings.all_channels() == {"a": ChannelSettings()}
