"""Settings: defaults, KV_* variables, overrides, and clear errors."""

import os
import re

import click
import pytest
from click.testing import CliRunner

from kv_app import cli, config
from kv_app.app import create_app
from kv_app.config import ConfigError
from kv_app.stores import STORES


def test_defaults():
    values = config.resolve({})
    assert values["PORT"] == 8123 and values["ON_ERROR"] == "strict" and values["STORE"] == "dict"
    assert values["DATA_PATH"] is None


def test_environment_then_overrides():
    env = {"KV_PORT": "9000", "KV_ACCESS_LOG": "true", "KV_STORE": "compact", "OTHER": "x"}
    values = config.resolve(env, PORT=9001)
    assert values["PORT"] == 9001 and values["ACCESS_LOG"] is True and values["STORE"] == "compact"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"KV_PORT": "http"}, "KV_PORT='http': expected a whole number"),
        ({"KV_ACCESS_LOG": "maybe"}, "KV_ACCESS_LOG='maybe': expected true or false"),
        ({"KV_ON_ERROR": "ignore"}, "KV_ON_ERROR='ignore': expected one of strict, lenient"),
    ],
)
def test_bad_values(env, message):
    with pytest.raises(ConfigError, match=message):
        config.from_environ(env)


def _serve_environment(monkeypatch, *args: str) -> dict[str, str]:
    """The environment `kv-app serve ARGS` hands gunicorn (whose start is only recorded)."""
    handed: dict[str, str] = {}
    monkeypatch.setattr(cli.os, "execve", lambda path, argv, env: handed.update(env))
    result = CliRunner().invoke(cli.cli, ["serve", *args])
    assert result.exit_code == 0 and handed, result.output
    return handed


def _not_the_default(setting: config.Setting):
    if setting.kind is bool:
        return not setting.default
    if setting.choices:
        return next(c for c in setting.choices if c != setting.default)
    if setting.kind is int:
        return setting.high if setting.default != setting.high else setting.low
    return f"given-{setting.name.lower()}"


def test_three_spellings(monkeypatch):
    """What a user passes to `kv-app serve` reaches gunicorn as a KV_* variable that
    resolves to the setting's config key: each flag (a setting's, named after it), and
    the DATA_FILE argument for DATA_PATH."""
    for name in [k for k in os.environ if k.startswith("KV_")]:
        monkeypatch.delenv(name)
    handed = _serve_environment(monkeypatch, "my.data")
    assert config.resolve(handed)["DATA_PATH"] == os.path.abspath("my.data")
    flags = [p for p in cli.serve.params if isinstance(p, click.Option)]
    assert len(flags) > 10
    for flag in flags:
        setting = config.BY_NAME[flag.name.upper()]
        assert (flag.opts[0], flag.envvar) == (setting.flag, setting.env)
        value = _not_the_default(setting)
        if setting.kind is bool:
            given = [setting.flag if value else f"--no-{setting.flag[2:]}"]
        else:
            given = [setting.flag, str(value)]
        handed = _serve_environment(monkeypatch, "my.data", *given)
        assert config.resolve(handed)[setting.name] == value, (given, handed.get(setting.env))


@pytest.mark.parametrize(
    "env, message",
    [
        ({"KV_MAX_BATCH": "-5"}, "KV_MAX_BATCH=-5: expected a whole number from 1 to 100000"),
        ({"KV_PORT": "70000"}, "KV_PORT=70000: expected a whole number from 1 to 65535"),
        ({"KV_WORKERS": "0"}, "KV_WORKERS=0: expected a whole number from 1 to 64"),
        ({"KV_STORE": "Dict"}, "KV_STORE='Dict': expected one of dict, compact"),
        ({"KV_LOG_LEVEL": "verbose"}, "KV_LOG_LEVEL='verbose': expected one of debug"),
    ],
)
def test_values_out_of_range(env, message):
    """Defect 7: KV_MAX_BATCH=-5 made every batch a 413."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.resolve(env)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ON_ERROR": "strcit"}, "ON_ERROR='strcit': expected one of strict, lenient"),
        ({"MAX_BATCH": 0}, "MAX_BATCH=0: expected a whole number from 1 to 100000"),
        ({"MAX_BATCH": True}, "MAX_BATCH=True: expected a whole number"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG='maybe': expected true or false"),
        ({"MAX_BATH": 10}, "MAX_BATH: not a kv_app setting (did you mean MAX_BATCH?)"),
    ],
)
def test_overrides_are_checked_too(overrides, message, data_file):
    """Defect 7: an override ON_ERROR="strcit" silently meant lenient."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app({"DATA_PATH": str(data_file), **overrides})


def test_overrides_of_the_right_type_and_strings():
    values = config.resolve({}, MAX_BATCH="7", ACCESS_LOG="yes", PORT=1)
    assert (values["MAX_BATCH"], values["ACCESS_LOG"], values["PORT"]) == (7, True, 1)


def test_unknown_variables_are_named_with_a_suggestion():
    env = {"KV_MAX_BATCHES": "5", "KV_PORT": "1", "KV_URL": "http://x", "KVX": "1", "PATH": "/"}
    assert config.unknown_environ(env) == [
        "KV_MAX_BATCHES is not a kv_app setting, ignored (did you mean KV_MAX_BATCH?)"
    ]


def test_every_setting_has_a_type_a_range_and_help():
    for s in config.SETTINGS:
        assert s.help.endswith(".") and s.kind in (str, int, bool)
        if s.kind is int:
            assert s.low <= s.default <= s.high
        if s.choices:
            assert s.default in s.choices
    assert config.BY_NAME["STORE"].choices == tuple(STORES)
