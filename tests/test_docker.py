"""The Docker image, when a Docker daemon is here (skipped otherwise): the README's data
swap (rename a new file over the old on the host, `docker kill --signal HUP`) works."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, free_port, make_data


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not _docker_works(), reason="no Docker daemon here")
IMAGE = "kv-app:test"


@pytest.fixture(scope="module")
def image():
    subprocess.run(
        ["docker", "build", "--quiet", "--tag", IMAGE, str(ROOT)], check=True, capture_output=True
    )
    return IMAGE


def _wait(url: str, condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, timeout=2)
            if condition(r):
                return r
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {url}")


class Container:
    """`bash scripts/run.sh PATH` on a free port: the README's way to run the image."""

    def __init__(self, image: str, path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"kv-app-{self.port}"
        env = {**os.environ, "KV_PORT": str(self.port), "KV_IMAGE": image}
        self.run = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "run.sh"), str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""

    def hup(self) -> None:
        subprocess.run(
            ["docker", "kill", "--signal", "HUP", self.name], check=True, capture_output=True
        )

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["docker", "stop", self.name], capture_output=True)
        self.output, _ = self.run.communicate(timeout=30)


def test_swap_by_rename_and_hup_in_the_container(image, tmp_path):
    """Defect 12: run.sh mounted the single file, so a HUP reloaded the old inode."""
    data = tmp_path / "current.data"
    pairs = list(make_data.pairs(50, seed=5))
    data.write_text("".join(f"{k} old:{v}\n" for k, v in pairs))
    tmp_path.chmod(0o755)
    data.chmod(0o644)
    key = pairs[0][0]
    with Container(image, data) as c:
        _wait(f"{c.url}/readyz", lambda r: r.status_code == 200)
        old = requests.get(f"{c.url}/readyz", timeout=5).json()
        new = tmp_path / "next.data"
        new.write_text("".join(f"{k} new:{v}\n" for k, v in pairs))
        new.chmod(0o644)
        os.replace(new, data)
        c.hup()
        r = _wait(f"{c.url}/items/{key}", lambda r: r.json()["value"].startswith("new:"))
        # the old workers may still answer a request or two while they stop
        ready = _wait(f"{c.url}/readyz", lambda r: r.json()["version"] != old["version"]).json()
        assert old["version"] == old["sha256"][:16]
        assert r.headers["X-Data-Version"] == ready["version"]
    assert "from /data/current.data in" in c.output and ready["version"] in c.output


def test_a_snapshot_root_published_on_the_host(image, tmp_path):
    """A root of versions mounted read-only: publish on the host, HUP, the new version."""
    from kv_app.stores import versions

    pairs = list(make_data.pairs(50, seed=6))
    root = tmp_path / "root"
    for tag in ("v1", "v2"):
        (tmp_path / f"{tag}.data").write_text("".join(f"{k} {tag}:{v}\n" for k, v in pairs))
    versions.publish(tmp_path / "v1.data", root)
    tmp_path.chmod(0o755)
    key = pairs[0][0]
    with Container(image, root) as c:
        _wait(f"{c.url}/items/{key}", lambda r: r.json()["value"].startswith("v1:"))
        versions.publish(tmp_path / "v2.data", root)
        c.hup()
        _wait(f"{c.url}/items/{key}", lambda r: r.json()["value"].startswith("v2:"))
        _wait(f"{c.url}/readyz", lambda r: r.json()["snapshot_version"] == 2)


def test_the_image_without_a_mount_says_to_mount_data(image):
    from test_image_entry import NO_MOUNT

    r = subprocess.run(
        ["docker", "run", "--rm", image], capture_output=True, text=True, timeout=120
    )
    assert (r.returncode, r.stderr) == (1, NO_MOUNT)
