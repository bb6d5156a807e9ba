"""How a real server refuses to start, through `kv-app serve` and gunicorn directly: a bad
setting (flag or variable) and a port already in use are one line and exit status 1."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys

import pytest

from conftest import KV_APP, free_port, make_data

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:kv_app.gunicorn_conf"]
SERVERS = ["gunicorn"] + (["granian"] if importlib.util.find_spec("granian") else [])


def _env(**kv: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env.update(kv)
    return env


def _run(command: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    """Run a server that must refuse to start; killed (by its PID) if it does not."""
    with subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the server started: {out}{err}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.mark.parametrize(
    "args, env, line",
    [
        (["--port", "70000"], {}, "kv-app: --port 70000: expected a whole number from 1 to 65535"),
        ([], {"KV_PORT": "70000"}, "kv-app: KV_PORT=70000: expected a whole number from 1 to 65535"),
        (["--max-batch", "-5"], {}, "kv-app: --max-batch -5: expected a whole number from 1 to 100000"),
        ([], {"KV_CACHE_MAX_AGE": "x"}, "kv-app: KV_CACHE_MAX_AGE='x': expected a whole number from 0 to 31536000"),
        ([], {"KV_METRICS": "maybe"}, "kv-app: KV_METRICS='maybe': expected true or false"),
    ],
)  # fmt: skip
def test_kv_app_serve_refuses_a_bad_setting_in_one_line(tmp_path, data_file, args, env, line):
    r = _run([KV_APP, "serve", str(data_file), *args], _env(**env), tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", line + "\n")


def test_gunicorn_directly_refuses_a_bad_variable_the_same_way(tmp_path, data_file):
    env = _env(KV_DATA_PATH=str(data_file), KV_PORT="70000")
    r = _run(GUNICORN, env, tmp_path)
    assert (r.returncode, r.stderr) == (
        1,
        "kv-app: KV_PORT=70000: expected a whole number from 1 to 65535\n",
    )


@pytest.fixture(scope="module")
def bigger_file(tmp_path_factory):
    """200,000 pairs: loading them takes long enough to show in the log if it happened."""
    path = tmp_path_factory.mktemp("big") / "big.data"
    make_data.write(200_000, str(path), seed=3)
    return path


@pytest.fixture
def held_port():
    """A free port of 127.0.0.1 with a listening socket held on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("server", SERVERS)
def test_a_port_in_use_stops_start_up_before_the_data_loads(
    tmp_path, bigger_file, held_port, server
):
    """One line, exit 1, and nothing of the data's loading in the log (before: the whole
    file loaded, then gunicorn's 10 error lines over 5 s)."""
    command = [KV_APP, "serve", str(bigger_file), "--port", str(held_port), "--server", server]
    r = _run(command, _env(KV_LOG_LEVEL="debug"), tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == (
        f"kv-app: cannot listen on 127.0.0.1:{held_port}: the port is already in use "
        "(another server? choose another port with --port or KV_PORT)\n"
    )


def test_gunicorn_directly_finds_the_port_in_use_before_loading(tmp_path, bigger_file, held_port):
    env = _env(KV_DATA_PATH=str(bigger_file), KV_PORT=str(held_port), KV_LOG_LEVEL="debug")
    r = _run(GUNICORN, env, tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith(
        f"kv-app: cannot listen on 127.0.0.1:{held_port}: the port is already in use"
    )
    assert r.stderr.count("\n") == 1, r.stderr
