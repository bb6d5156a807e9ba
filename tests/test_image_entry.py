"""What the Docker image does without a mount, without Docker: the Dockerfile's own CMD,
run here with the Dockerfile's own ENV (tests/test_docker.py runs the image itself when a
Docker daemon is here)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port

NO_MOUNT = (
    "kv-app: /data/data.file: no such file, and nothing is mounted at /data: mount the "
    'data\'s directory there (docker run -v "$PWD/data:/data:ro" -e '
    "KV_DATA_PATH=/data/my.data ...) or set KV_DATA_PATH\n"
)


def dockerfile() -> tuple[dict[str, str], list[str]]:
    """(the ENV the image sets, its CMD), read from the Dockerfile."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    command: list[str] = []
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(word.split("=", 1) for word in shlex.split(line[4:]))
        elif line.startswith("CMD "):
            command = json.loads(line[4:])
    return env, command


def test_the_image_without_a_mount_says_to_mount_data(tmp_path):
    if Path("/data").exists():
        pytest.skip("this machine has a /data")
    env, command = dockerfile()
    assert env["KV_DATA_PATH"] == "/data/data.file" and command[0] == "gunicorn"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KV_")}, **env}
    env.update(KV_HOST="127.0.0.1", KV_PORT=str(free_port()))  # not 0.0.0.0:8123 here
    command[0] = str(Path(sys.executable).with_name("gunicorn"))
    r = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", NO_MOUNT)


def test_a_missing_file_elsewhere_is_one_line_as_before(tmp_path):
    from kv_app.app import create_app
    from kv_app.loader import LoadError

    with pytest.raises(LoadError, match=r"^/nowhere/x\.data: no such file$"):
        create_app({"DATA_PATH": "/nowhere/x.data"})
