"""The `kv-app` command, in-process with click's CliRunner."""

from __future__ import annotations

import re
import sys

import pytest
from click.testing import CliRunner
from test_loader import K1, K3, LIMIT, OVER, huge_line_file

from kv_app import cli
from kv_app.loader import LoadError


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(cli.cli, [str(a) for a in args])


def test_check_good_file(run, data_file):
    r = run("check", data_file)
    assert r.exit_code == 0 and r.output == f"{data_file}: OK, 2,000 pairs\n"


def test_check_reports_every_bad_line(run, tmp_path):
    path = tmp_path / "bad.data"
    path.write_text(
        "8a35eb59-62b3-481c-8875-1f248df4c952 ok\nbad\n\n06bf4950-90ea-44d4-9df9-7fa724212196\tx\n"
    )
    r = run("check", path)
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [
        f"{path}:2: no space between key and value",
        f"{path}:3: blank line",
        f"{path}:4: no space between key and value (found a tab; the separator is one space)",
    ]
    assert f"Error: {path}: 3 bad lines, 1 good pairs" in r.stderr


@pytest.mark.parametrize("kind", ["missing", "directory", "empty"])
def test_check_unusable_files(run, tmp_path, kind):
    path = {"missing": tmp_path / "x.data", "directory": tmp_path, "empty": tmp_path / "e.data"}[
        kind
    ]
    if kind == "empty":
        path.write_bytes(b"")
    r = run("check", path)
    assert r.exit_code == 1
    expected = {
        "missing": "no such file",
        "directory": "not a kv_app snapshot (no manifest.json)",
        "empty": "file is empty",
    }[kind]
    assert r.stderr == f"Error: {path}: {expected}\n"


def test_serve_execs_gunicorn_with_the_config_and_settings(run, data_file, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setenv("KV_CONNECTIONS", "300")
    r = run(
        "serve",
        data_file,
        "--port",
        "9999",
        "--workers",
        "3",
        "--on-error",
        "lenient",
        "--access-log",
    )
    assert r.exit_code == 0, r.output
    [(path, argv, env)] = calls
    assert path == sys.executable
    # The packaged settings: no file of the checkout is needed (defect 1).
    assert argv == [sys.executable, "-m", "gunicorn", "--config", "python:kv_app.gunicorn_conf"]
    assert env["KV_DATA_PATH"] == str(data_file)
    assert (env["KV_PORT"], env["KV_WORKERS"], env["KV_ON_ERROR"], env["KV_ACCESS_LOG"]) == (
        "9999",
        "3",
        "lenient",
        "1",
    )
    assert env["KV_CONNECTIONS"] == "300"  # from the environment


def test_serve_needs_a_data_file(run, monkeypatch):
    monkeypatch.delenv("KV_DATA_PATH", raising=False)
    r = run("serve")
    assert r.exit_code == 2 and "Missing argument 'DATA_FILE'" in r.output


@pytest.mark.parametrize(
    "args, env, line",
    [
        (("--store", "redis"), {}, "--store redis: expected one of dict, compact, snapshot"),
        (("--port", "http"), {}, "--port http: expected a whole number from 1 to 65535"),
        (("--port", "70000"), {}, "--port 70000: expected a whole number from 1 to 65535"),
        ((), {"KV_PORT": "70000"}, "KV_PORT=70000: expected a whole number from 1 to 65535"),
        ((), {"KV_PORT": "http"}, "KV_PORT='http': expected a whole number from 1 to 65535"),
        ((), {"KV_ACCESS_LOG": "maybe"}, "KV_ACCESS_LOG='maybe': expected true or false"),
        ((), {"KV_CACHE_MAX_AGE": "-1"}, "KV_CACHE_MAX_AGE=-1: expected a whole number from 0"),
        (("--cache-max-age", "-1"), {}, "--cache-max-age -1: expected a whole number from 0"),
    ],
)
def test_a_bad_setting_is_one_line_naming_what_the_user_wrote(
    run, data_file, monkeypatch, args, env, line
):
    """Flag or variable: one line, exit 1 (before: click's usage error naming the flag
    even for a variable, exit 2). The flag wins over its variable, and is the one named."""
    monkeypatch.setattr(cli.os, "execve", lambda *a: pytest.fail("served a bad setting"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    r = run("serve", data_file, *args)
    assert r.exit_code == 1
    assert r.stderr.startswith(f"kv-app: {line}") and r.stderr.count("\n") == 1, r.stderr


def test_a_flag_wins_over_its_bad_variable(run, data_file, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execve", lambda path, argv, env: calls.append(env))
    monkeypatch.setenv("KV_PORT", "70000")
    monkeypatch.setenv("KV_METRICS", "maybe")
    r = run("serve", data_file, "--port", "8124", "--no-metrics")
    assert r.exit_code == 0, r.output
    assert (calls[0]["KV_PORT"], calls[0]["KV_METRICS"]) == ("8124", "0")


def test_every_setting_is_a_flag_of_the_commands_its_row_names(run):
    """Generated from config.SETTINGS: serve takes every server setting (CACHE_MAX_AGE
    and CACHE_MAX_AGE_MISSING included, which it lacked when listed by hand)."""
    from kv_app import config

    for s in config.SETTINGS:
        assert s.commands or s.name == "DATA_PATH", s.name
        for command in s.commands:
            params = {p.name: p for p in cli.cli.commands[command].params}
            param = params[s.name.lower()]
            assert s.flag in param.opts and param.envvar == s.env, (s.name, command)
        for command in set(cli.cli.commands) - set(s.commands):
            names = {p.name for p in cli.cli.commands[command].params}
            assert s.name.lower() not in names or command == "serve" and s.name == "DATA_PATH"
    serve = {p.name for p in cli.cli.commands["serve"].params}
    assert {"cache_max_age", "cache_max_age_missing", "port", "pid_file"} <= serve


def test_a_setting_added_to_the_table_becomes_a_flag(monkeypatch):
    """What another branch's new row (CORS_ORIGINS ...) gets with no edit of cli.py."""
    import click

    from kv_app import config

    new = config.Setting("NEW_THING", 7, "A setting added later.", int, (), 1, 9)
    monkeypatch.setattr(config, "SETTINGS", (*config.SETTINGS, new))
    monkeypatch.setitem(config.BY_NAME, "NEW_THING", new)

    @click.command()
    @cli.settings_options("serve")
    def serve(**settings):
        click.echo(repr(settings["new_thing"]))

    runner = CliRunner()
    assert runner.invoke(serve, ["--new-thing", "3"]).output == "3\n"
    r = runner.invoke(serve, [], env={"KV_NEW_THING": "10"})
    assert r.exit_code == 1 and r.stderr == (
        "kv-app: KV_NEW_THING=10: expected a whole number from 1 to 9\n"
    )


def test_help_lists_every_setting_with_its_variable(run):
    out = run("serve", "--help").output
    for name in ("HOST", "PORT", "WORKERS", "ON_ERROR", "STORE", "ACCESS_LOG"):
        assert f"KV_{name}" in out


def test_get_prints_values(run, server, data):
    k1, k2 = list(data)[:2]
    r = run("get", k1, "--url", server.url)
    assert r.exit_code == 0 and r.stdout == data[k1] + "\n"
    r = run("get", k1, k2.upper(), "--url", server.url)
    assert r.stdout == f"{k1}\t{data[k1]}\n{k2.upper()}\t{data[k2]}\n"


def test_get_missing_and_malformed(run, server):
    missing = "00000000-0000-4000-8000-000000000000"
    r = run("get", missing, "--url", server.url)
    assert r.exit_code == 1 and r.stderr == f"not found: {missing}\n"
    r = run("get", "nope", "--url", server.url)
    assert r.exit_code == 1 and "malformed id 'nope'" in r.stderr


def test_get_takes_a_url_without_a_scheme(run, server, data):
    k1 = next(iter(data))
    r = run("get", k1, "--url", f"127.0.0.1:{server.port}")
    assert r.exit_code == 0 and r.stdout == data[k1] + "\n"
    r = run("get", k1, "--url", "ftp://127.0.0.1:1")
    assert r.exit_code == 1
    assert (
        r.stderr
        == "Error: ftp://127.0.0.1:1: a kv_app server's URL starts with http:// or https://\n"
    )


def test_get_unreachable_server(run):
    r = run("get", "00000000-0000-4000-8000-000000000000", "--url", "http://127.0.0.1:9")
    assert r.exit_code == 1 and "cannot reach http://127.0.0.1:9" in r.stderr


def test_get_several_keys_uses_batches(run, server, data):
    keys = list(data)[:5]
    missing = "00000000-0000-4000-8000-000000000000"
    r = run("get", *keys, missing, "--url", server.url)
    assert r.exit_code == 1
    assert r.stdout == "".join(f"{k}\t{data[k]}\n" for k in keys)
    assert r.stderr == f"not found: {missing}\n"
    r = run("get", keys[0], "bad-key", "--url", server.url)
    assert r.exit_code == 1 and "1 malformed ids: each must be a UUID string: 'bad-key'" in r.stderr


def test_check_and_build_take_the_value_limit_as_flag_or_variable(run, tmp_path, monkeypatch):
    path = huge_line_file(tmp_path)  # a value of 3,000,000 bytes on line 2
    monkeypatch.delenv("KV_MAX_VALUE_BYTES", raising=False)
    r = run("check", path)  # under the default (4 MiB)
    assert r.exit_code == 0 and r.output == f"{path}: OK, 3 pairs\n"
    r = run("check", path, "--max-value-bytes", LIMIT)
    assert r.exit_code == 1 and r.stdout == f"{path}:2: {OVER}\n"
    assert r.stderr == f"Error: {path}: 1 bad lines, 2 good pairs\n"
    r = run("build", path, tmp_path / "snap", "--max-value-bytes", LIMIT)
    assert r.exit_code == 1 and r.stderr == f"Error: {path}:2: {OVER}\n"
    assert not (tmp_path / "snap").exists()
    r = run("build", path, tmp_path / "snap", "--max-value-bytes", LIMIT, "--on-error", "lenient")
    assert r.exit_code == 0 and f"skipped {path}:2: {OVER}\n" in r.stderr
    assert r.stdout.startswith("2 pairs from")
    monkeypatch.setenv("KV_MAX_VALUE_BYTES", str(LIMIT))
    r = run("check", path)
    assert r.exit_code == 1 and r.stdout == f"{path}:2: {OVER}\n"
    r = run("publish", path, tmp_path / "root")
    assert r.exit_code == 1 and r.stderr == f"Error: {path}:2: {OVER}\n"
    monkeypatch.delenv("KV_MAX_VALUE_BYTES")
    r = run("publish", path, tmp_path / "root", "--max-value-bytes", LIMIT)
    assert r.exit_code == 1 and r.stderr == f"Error: {path}:2: {OVER}\n"
    r = run("check", path, "--max-value-bytes", 0)
    assert r.exit_code == 1
    assert r.stderr == "kv-app: --max-value-bytes 0: expected a whole number from 1 to 1073741824\n"


def test_serve_passes_the_value_limit_on(run, data_file, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execve", lambda path, argv, env: calls.append(env))
    r = run("serve", data_file, "--max-value-bytes", 1000)
    assert r.exit_code == 0, r.output
    assert calls[0]["KV_MAX_VALUE_BYTES"] == "1000"


@pytest.mark.parametrize(
    "store, flags, env, limit",
    [
        ("dict", ("--max-value-bytes", str(LIMIT)), {}, LIMIT),
        ("compact", (), {"KV_MAX_VALUE_BYTES": str(LIMIT)}, LIMIT),
        ("dict", (), {}, 4 * 1024 * 1024),  # the default, for a value one byte longer
    ],
)
def test_a_server_refuses_to_start_on_a_value_over_the_limit(
    start_server, tmp_path, store, flags, env, limit
):
    path = tmp_path / "big.data"
    path.write_bytes(f"{K1} v1\n{K3} {'v' * (limit + 1)}\n".encode())
    server = start_server(path, "--store", store, *flags, env=env, wait=False)
    assert server.proc.wait(timeout=60) == 1
    log = server.log()
    over = f"value of {limit + 1:,} bytes, over KV_MAX_VALUE_BYTES ({limit:,})"
    assert [line for line in log.splitlines() if "kv-app" in line] == [f"kv-app: {path}:2: {over}"]
    assert "Traceback" not in log and "Booting worker" not in log


def test_create_app_takes_the_value_limit_from_its_settings(tmp_path, monkeypatch):
    """Before: create_app({"MAX_VALUE_BYTES": ...}) was accepted and ignored."""
    from kv_app.app import create_app

    path = huge_line_file(tmp_path)
    monkeypatch.delenv("KV_MAX_VALUE_BYTES", raising=False)
    for kind in ("dict", "compact"):
        with pytest.raises(LoadError, match=re.escape(f"{path}:2: {OVER}")):
            create_app({"DATA_PATH": str(path), "STORE": kind, "MAX_VALUE_BYTES": LIMIT})
