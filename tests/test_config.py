"""Settings: defaults, KV_* variables, overrides, and clear errors."""

import pytest

from kv_app import config
from kv_app.config import ConfigError


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
