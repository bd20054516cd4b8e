"""Where the shared state's settings come from (the config's `redis` section, then REDIS_URL and
REDIS_KEY_PREFIX), and that the URL, which carries a password, never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import ConfigError, RedisSection, parse_config
from proxy.config.snapshot import Config
from proxy.metrics import Metrics
from proxy.shared import RedisSettings, SharedStore

ROOT = Path(__file__).resolve().parents[2]
MINIMAL_CONFIG = "templates:\n  default: {model: {provider: openai, model: gpt-4o}}\n"


def load_config_text(text: str, environ: dict[str, str] | None = None, *, secrets_optional: bool = False) -> Config:
    return parse_config(text, "routing.yaml", environ or {}, secrets_optional=secrets_optional)


def test_settings_come_from_the_environment_and_never_show_the_password() -> None:
    assert not RedisSettings.from_environment({}).enabled
    assert not RedisSettings.from_environment({"REDIS_URL": "  "}).enabled
    settings = RedisSettings.from_environment(
        {"REDIS_URL": "rediss://proxy:s3cret-pw@redis.internal:6380/0", "REDIS_KEY_PREFIX": "staging:"}
    )
    assert settings.enabled and settings.prefix == "staging:"
    assert settings.describe() == "rediss://redis.internal:6380"
    assert "s3cret-pw" not in repr(settings)
    with pytest.raises(ValueError) as excinfo:
        RedisSettings.from_environment({"REDIS_URL": "http://user:s3cret-pw@redis:6379"})
    assert "s3cret-pw" not in str(excinfo.value)


def _section(text: str) -> RedisSection:
    return load_config_text(MINIMAL_CONFIG + text).redis


def test_the_config_file_comes_first_then_the_environment() -> None:
    environ = {"REDIS_URL": "redis://env-host:6379/0", "REDIS_KEY_PREFIX": "env:"}
    from_file = RedisSettings.from_config(
        _section(
            "redis:\n  url: rediss://proxy:pw-2231@file-host:6380/1\n  key_prefix: 'file:'\n"
            "  call_timeout_seconds: 0.02\n  background_timeout_seconds: 3\n  connect_timeout_seconds: 0.5\n"
            "  retry_seconds: 2\n  max_connections: 8\n"
        ),
        environ,
    )
    assert from_file.describe() == "rediss://file-host:6380" and from_file.prefix == "file:"
    assert (from_file.op_timeout, from_file.background_timeout, from_file.connect_timeout) == (0.02, 3.0, 0.5)
    assert (from_file.retry_after, from_file.max_connections) == (2.0, 8)
    # Unset or empty in the file (an unset ${REDIS_URL:-}): the environment, as before the section existed.
    for text in ("", "redis: {call_timeout_seconds: 0.02}\n", "redis:\n  url: ${REDIS_URL_UNSET:-}\n"):
        settings = RedisSettings.from_config(_section(text), environ)
        assert settings.describe() == "redis://env-host:6379" and settings.prefix == "env:", text
    assert not RedisSettings.from_config(_section(""), {}).enabled
    assert RedisSettings.from_config(_section(""), {}).prefix == "vapi-proxy:"


@pytest.mark.parametrize(
    "url",
    ["https://proxy:pw-2231@redis:6379", "redis://proxy:pw-2231@redis:port/0", "redis://proxy:pw-2231@:6379"],
)
def test_a_malformed_url_in_the_file_is_refused_with_its_location_and_without_its_text(url: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config_text(MINIMAL_CONFIG + f"redis:\n  url: {url}\n")
    (issue,) = excinfo.value.issues
    assert issue.path == ("redis",) and issue.message.startswith("url ") and issue.line is not None
    assert "pw-2231" not in str(excinfo.value) and "pw-2231" not in repr(excinfo.value)


def test_the_url_never_shows_in_a_repr_of_the_config() -> None:
    section = _section("redis:\n  url: rediss://proxy:pw-2231@cache:6380/0\n")
    assert section.url is not None and str(section.url).startswith("rediss://")
    settings = RedisSettings.from_config(section, {})
    shown = repr(section) + repr(settings) + repr(SharedStore(settings, Metrics())) + str(settings.describe())
    assert "pw-2231" not in shown and "proxy:" not in shown.replace("'vapi-proxy:'", "")


def test_a_url_read_from_an_unset_variable_is_a_warning_for_check_and_an_error_for_serve() -> None:
    text = MINIMAL_CONFIG + "redis:\n  url: ${REDIS_URL}\n"
    checked = load_config_text(text, secrets_optional=True)
    assert [(w.path, w.message) for w in checked.warnings] == [
        (("redis", "url"), "environment variable REDIS_URL is not set (serve needs it)")
    ]
    with pytest.raises(ConfigError) as excinfo:
        load_config_text(text)
    assert [(i.path, i.message) for i in excinfo.value.issues] == [
        (("redis", "url"), "environment variable REDIS_URL is not set")
    ]
    # Set to something malformed: refused, naming the key, never the value.
    with pytest.raises(ConfigError) as excinfo:
        load_config_text(text, {"REDIS_URL": "tcp://proxy:pw-8812@cache:6379"})
    assert "pw-8812" not in str(excinfo.value) and "must start with redis://" in str(excinfo.value)


def test_check_names_the_redis_server_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAPI_SERVER_SECRET", "cli-secret")
    path = tmp_path / "routing.yaml"
    example = (ROOT / "config.example.yaml").read_text()
    path.write_text(example + "redis:\n  url: rediss://proxy:pw-5150@cache.internal:6380/0\n")
    monkeypatch.setenv("NANGO_SECRET_KEY", "nango-key-1")
    assert main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "shared state: Redis at rediss://cache.internal:6380" in out
    assert "pw-5150" not in out + err and "share no routing" not in err
    monkeypatch.delenv("NANGO_SECRET_KEY")
    assert main(["check", "--config", str(path)]) == 0
    assert "warning: redis without nango.secret_key: the replicas share no routing" in capsys.readouterr().err
    path.write_text(example)
    assert main(["check", "--config", str(path)]) == 0
    assert "shared state" not in capsys.readouterr().out
