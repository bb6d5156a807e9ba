"""Settings: defaults, KV_* variables, overrides, and clear errors."""

import re

import pytest

from kv_app import config
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


def test_three_spellings():
    setting = config.BY_NAME["DATA_PATH"]
    assert (setting.env, setting.flag) == ("KV_DATA_PATH", "--data-path")
    assert all(s.help for s in config.SETTINGS)


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
