"""The `kv-app` command, in-process with click's CliRunner."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from kv_app import cli


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


def test_serve_rejects_bad_flag_values(run, data_file):
    r = run("serve", data_file, "--store", "redis")
    assert r.exit_code == 2 and "'redis' is not one of 'dict', 'compact'" in r.output
    r = run("serve", data_file, "--port", "http")
    assert r.exit_code == 2 and "'http' is not a valid integer" in r.output


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
