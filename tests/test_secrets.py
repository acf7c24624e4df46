"""Secrets: a distinctive password put through every path that shows settings appears in none of them."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from container_messaging import ConfigurationError, MessagingContainer
from container_messaging.config import (
    DeduplicationSettings,
    Settings,
    TransportSettings,
    load_settings,
    settings_from_dict,
)
from container_messaging.redaction import SecretUrl

PASSWORD = "Zx7Kq9Secret"
URL = f"pyamqp://guest:{PASSWORD}@127.0.0.1:5672//"
REDIS_URL = f"redis://:{PASSWORD}@127.0.0.1:1/0"
# Named, so that the test's own line in a traceback shows the name, not the password.
SLASHED_STORE = "redis://:Zx7/Kq9Secret@127.0.0.1:6379/0"
MALFORMED_REFERENCE = "pyamqp://guest:Zx7${Kq9Secret@127.0.0.1//"


def everything_shown(exc: BaseException) -> str:
    """The message and the full traceback, chained causes and contexts included, as -vvv prints them."""
    return str(exc) + "\n" + "".join(traceback.format_exception(exc))


def error_of(path: Path) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    return info.value


# ---------------------------------------------------------------------------------------------------------------------
# SecretUrl


def test_secret_url_is_the_url_but_shows_masked() -> None:
    """A SecretUrl compares, slices and parses as the real URL, while repr, str and format show it masked."""
    url = SecretUrl(URL)

    assert url == URL
    assert url.reveal() == URL
    assert type(url.reveal()) is str
    assert url.partition("@")[0].endswith(PASSWORD)
    logged = "%s" % url  # noqa: UP031 - how logging formats its arguments
    shown = [repr(url), str(url), f"{url}", f"{url:>80}", logged, repr([url]), repr({"u": url})]
    for text in shown:
        assert PASSWORD not in text
        assert "guest:***@127.0.0.1" in text


def test_secret_url_wrapped_twice_keeps_the_url() -> None:
    """SecretUrl(SecretUrl(url)) is still the real URL, not its masked text."""
    assert SecretUrl(SecretUrl(URL)).reveal() == URL


# ---------------------------------------------------------------------------------------------------------------------
# Settings and the container


def test_settings_reprs_show_no_password() -> None:
    """repr and str of Settings, its groups and its as_dict() never show the URL's or the store's password."""
    settings = settings_from_dict({"transport": {"url": URL}, "deduplication": {"store": REDIS_URL}})

    assert settings.transport.url == URL
    assert settings.deduplication.store == REDIS_URL
    for shown in (settings, settings.transport, settings.deduplication, settings.as_dict()):
        assert PASSWORD not in repr(shown)
        assert PASSWORD not in str(shown)


def test_settings_built_in_code_keep_secrets_masked() -> None:
    """TransportSettings and DeduplicationSettings built directly hold their URLs as SecretUrl values."""
    transport = TransportSettings(url=URL)
    deduplication = DeduplicationSettings(store=REDIS_URL)

    assert isinstance(transport.url, SecretUrl)
    assert isinstance(deduplication.store, SecretUrl)
    assert PASSWORD not in repr(transport) + repr(deduplication)
    assert Settings(transport=transport).as_dict()["transport"]["url"] == URL


def test_container_reprs_show_no_password() -> None:
    """The messaging_config dict, the settings, the deduplication store and the container show no password."""
    container = MessagingContainer.from_dict(
        {"service_name": "secrets", "transport": {"url": URL}, "deduplication": {"store": REDIS_URL}}
    )
    try:
        config = container.get("messaging_config")
        assert config["transport"]["url"] == URL  # the value is the real URL
        for shown in (config, container.get("messaging_settings"), container.get("deduplication"), container):
            assert PASSWORD not in repr(shown)
            assert PASSWORD not in str(shown)
    finally:
        container.close()


# ---------------------------------------------------------------------------------------------------------------------
# Errors and their tracebacks


@pytest.mark.parametrize(
    "text",
    [
        f"transport:\n  url: [{URL}, [{URL}]]\n",
        f"transport: {URL}\n",
        f"deduplication:\n  store:\n    at: {REDIS_URL}\n",
        f"transport:\n  prefetch_count: {URL}\n",
        f"scan: {URL}\n",
        f"service_name: {URL}\n",
        f"conversion:\n  json_keys: {URL}\n",
        "transport:\n  url: http://guest:" + PASSWORD + "@host/\n",
        "deduplication:\n  store: mongodb://guest:" + PASSWORD + "@host/\n",
    ],
)
def test_wrong_value_errors_never_quote_the_password(tmp_path: Path, text: str) -> None:
    """A wrong-type or invalid value holding a password gives an error, and traceback, without the password."""
    path = tmp_path / "app.yaml"
    path.write_text(text)

    error = error_of(path)

    assert str(error).startswith(f"{path}: ")
    assert PASSWORD not in everything_shown(error)


@pytest.mark.parametrize(
    "url",
    [
        "pyamqp://guest:Zx7/Kq9Secret@127.0.0.1:5672//",
        "amqp://guest:Zx7?Kq9Secret@127.0.0.1:5672//",
        "redis://:Zx7#Kq9Secret@127.0.0.1:6379/0",
    ],
)
def test_unencoded_slash_in_password_is_a_clear_error(tmp_path: Path, url: str) -> None:
    """A password with an unencoded '/', '?' or '#' is an error suggesting percent-encoding, quoting no part of it."""
    path = tmp_path / "app.yaml"
    path.write_text(f"transport:\n  url: '{url}'\n")

    error = error_of(path)

    assert str(error).startswith(f"{path}: transport.url: ")
    assert "percent-encode" in str(error)
    shown = everything_shown(error)
    assert "Zx7" not in shown
    assert "Kq9Secret" not in shown


def test_unencoded_slash_in_store_password_is_a_clear_error() -> None:
    """A Redis deduplication store URL with an unencoded '/' in its password is an error naming the key."""
    with pytest.raises(ConfigurationError) as info:
        settings_from_dict({"deduplication": {"store": SLASHED_STORE}})

    assert str(info.value).startswith("<dict>: deduplication.store: ")
    assert "percent-encode" in str(info.value)
    assert "Kq9Secret" not in everything_shown(info.value)


@pytest.mark.parametrize(
    "text",
    [
        f"transport:\n  url: {URL}: oops\n",
        f'transport:\n  url: "{URL}\n',
        f"transport:\n  url: {URL}\n  - listed\n",
        f"transport:\n  url: {{{URL}\n",
    ],
)
def test_yaml_syntax_error_never_shows_the_password(tmp_path: Path, text: str) -> None:
    """A YAML syntax error names file, line and column, and neither it nor its traceback shows the password."""
    path = tmp_path / "app.yaml"
    path.write_text(text)

    error = error_of(path)

    assert str(error).startswith(f"{path}: YAML syntax error at line ")
    assert ", column " in str(error)
    assert isinstance(error.__cause__, Exception)
    assert PASSWORD not in everything_shown(error)


@pytest.mark.parametrize("tag", ["!!float", "!!int", "!!bool"])
def test_yaml_tagged_value_that_cannot_be_built_never_shows_the_password(tmp_path: Path, tag: str) -> None:
    """A tagged YAML value that cannot be built is a ConfigurationError naming the file, without the password."""
    path = tmp_path / "app.yaml"
    path.write_text(f"transport:\n  url: {tag} {URL}\n")

    error = error_of(path)

    assert str(error).startswith(f"{path}: YAML error: a value with an explicit tag")
    assert PASSWORD not in everything_shown(error)


@pytest.mark.parametrize(
    "text",
    [
        f"url = {URL}\n",
        f"[transport]\nurl = pyamqp://guest:\n{PASSWORD}@127.0.0.1//\n",
    ],
)
def test_ini_syntax_error_never_shows_the_password(tmp_path: Path, text: str) -> None:
    """An INI syntax error names file and line, and neither it nor its traceback shows the password."""
    path = tmp_path / "app.ini"
    path.write_text(text)

    error = error_of(path)

    assert str(error).startswith(f"{path}: INI syntax error: line")
    assert PASSWORD not in everything_shown(error)


def test_malformed_reference_in_a_url_does_not_quote_it() -> None:
    """A malformed ${ in a URL is an error giving its position, not the text around it."""
    with pytest.raises(ConfigurationError) as info:
        settings_from_dict({"transport": {"url": MALFORMED_REFERENCE}}, environ={})

    assert "transport.url: malformed environment variable reference at character 19" in str(info.value)
    assert "Kq9Secret" not in everything_shown(info.value)
