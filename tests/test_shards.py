"""A split snapshot behind deploy/nginx-shards.conf (scripts/cluster.sh) when a shard is
down, and batches sent to the front (skipped where nginx is not installed)."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import requests
from test_cluster import cluster, free_ports

from conftest import KV_APP, bench, wait_for
from kv_app.client import KVClient, KVPartial, KVUnavailable
from kv_app.stores.build import build

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


@pytest.fixture(scope="module")
def split(tmp_path_factory, data_file):
    path = tmp_path_factory.mktemp("split") / "split"
    build(data_file, path, shards=2)
    return path


@pytest.fixture
def sharded(tmp_path, split):
    """2 shards x 1 replica behind the front: (url, port, state dir); down afterwards."""
    port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env.update(KV_CLUSTER_DIR=str(tmp_path / "state"), KV_APP=KV_APP)
    try:
        cluster("up", str(split), "--replicas", "1", "--port", str(port), env=env)
        yield f"http://127.0.0.1:{port}", port, tmp_path / "state"
    finally:
        cluster("down", "--port", str(port), env=env, check=False)


def shard_of(key: str) -> int:
    return 0 if key[0] in "01234567" else 1


def stop_shard(state, port: int, shard: int) -> None:
    """Kill the one replica of that shard (2 x 1: shard n on port P+1+n), master and
    workers, as a crash would, and wait until they are gone."""
    master = int((state / f"replica-{port + 1 + shard}.pid").read_text())
    pids = [master, *bench.children(master)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids))


@pytest.mark.parametrize("down", [0, 1])
def test_get_many_with_a_shard_down_keeps_the_rest_and_names_the_unavailable(sharded, data, down):
    """Issue 14, item 13: with one shard's replicas down, get_many failed whole (HTTP 502,
    no id named) and dropped the healthy shard's values; with shard 0 down every batch
    failed, the shard map being read from /readyz, which the front sent to shard 0. Now
    the map comes from any shard and get_many raises KVPartial with the values found and
    the ids it could not look up."""
    url, port, state = sharded
    stop_shard(state, port, down)
    with KVClient(url, retries=1) as kv:
        with pytest.raises(KVPartial) as caught:
            kv.get_many(data)
    partial = caught.value
    assert isinstance(partial, KVUnavailable)  # what callers caught before
    assert partial.items == {k: v for k, v in data.items() if shard_of(k) != down}
    assert sorted(partial.unavailable) == sorted(k for k in data if shard_of(k) == down)
    assert f"shard {down}" in str(partial)
    assert partial.unavailable[0] in str(partial)  # ids named in the message too
    # Where nothing asked is on the missing shard, nothing changes: a plain dict.
    with KVClient(url, retries=1) as kv:
        healthy = [k for k in data if shard_of(k) != down][:30]
        assert kv.get_many(healthy) == {k: data[k] for k in healthy}


def test_a_batch_posted_to_the_front_is_refused_naming_the_shard_routes(sharded, data):
    """POST /items/batch matched the routing rule of the shard holding ids starting with
    "b" and went to that shard: answered when the ids happened all to be its own,
    refused by the server otherwise. The front now refuses it itself, in kv_app's error
    shape, pointing at /shards/<n>/items/batch; the per-shard routes answer."""
    url = sharded[0]
    for shard in (1, 0):  # shard 1's ids went to shard 1 and were answered
        ids = [k for k in data if shard_of(k) == shard][:20]
        r = requests.post(f"{url}/items/batch", json={"ids": ids}, timeout=5)
        assert r.status_code == 421, (shard, r.status_code, r.text[:200])
        body = r.json()
        assert body["status"] == 421 and body["error"] == "Misdirected Request"
        assert "/shards/<n>/items/batch" in body["message"]
        r = requests.post(f"{url}/shards/{shard}/items/batch", json={"ids": ids}, timeout=5)
        assert r.status_code == 200 and r.json()["items"] == {k: data[k] for k in ids}
    # The one id route is unchanged, and "batch" is not an id of shard 1.
    key = next(k for k in data if k[0] == "b")
    assert requests.get(f"{url}/items/{key}", timeout=5).json()["value"] == data[key]
    assert requests.get(f"{url}/items/batch", timeout=5).status_code == 405
