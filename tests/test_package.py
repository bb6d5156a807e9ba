"""kv_app as users install it: a wheel in a fresh venv, served from another directory."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import requests

from conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel built from this checkout (its dependencies are this
    test venv's, reached through a .pth file: nothing is downloaded but the build tools)."""
    root = tmp_path_factory.mktemp("installed")
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, ROOT],
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("kv_app-*.whl")
    env = root / "venv"
    venv.create(env, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    (site / "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            env / "bin" / "python",
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            wheel,
        ],
        check=True,
        capture_output=True,
    )
    return env


def test_installed_package_serves_from_any_directory(installed, tmp_path, start_server, data_file):
    """Defect 1: `Error: cannot find gunicorn.conf.py and wsgi.py` once installed."""
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import kv_app; print(kv_app.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(installed)), where  # the wheel's copy, not the checkout
    server = start_server(
        data_file, serve=(str(installed / "bin" / "kv-app"), "serve"), cwd=tmp_path
    )
    ready = requests.get(f"{server.url}/readyz", timeout=5).json()
    assert ready["status"] == "ready" and ready["pairs"] == 2000
    for path in (
        "/docs/",
        "/redoc",
        "/openapi.json",
        "/static/swagger-ui/swagger-ui-bundle.js",
        "/static/docs/swagger-init.js",
        "/static/redoc/redoc.standalone.js",
    ):
        assert requests.get(server.url + path, timeout=5).status_code == 200, path


def test_installed_gunicorn_config_module(installed, tmp_path, data_file):
    """`gunicorn -c python:kv_app.gunicorn_conf`, as the Docker image runs it, checks its
    settings and stops with one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env.update(KV_DATA_PATH=str(data_file), KV_MAX_BATCH="-5")
    r = subprocess.run(
        [installed / "bin" / "python", "-m", "gunicorn", "-c", "python:kv_app.gunicorn_conf"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert r.stderr == "kv-app: KV_MAX_BATCH=-5: expected a whole number from 1 to 100000\n"


def test_wheel_contents(installed):
    [wheel] = (installed.parent / "dist").glob("kv_app-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "kv_app/gunicorn_conf.py",
        "kv_app/templates/docs.html",
        "kv_app/templates/redoc.html",
        "kv_app/static/docs/swagger-init.js",
        "kv_app/static/swagger-ui/swagger-ui-bundle.js",
        "kv_app/static/swagger-ui/LICENSE",
        "kv_app/static/redoc/redoc.standalone.js",
        "kv_app/static/redoc/LICENSE",
    ):
        assert needed in names, needed
    assert any(name.endswith("/licenses/LICENSE") for name in names)
