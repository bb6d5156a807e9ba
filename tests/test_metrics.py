"""/metrics on the real server: counts summed exactly across gunicorn workers, through a
worker's death and a reload (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import os
import signal

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import bench, make_data, wait_for


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def item_requests(samples) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "kv_http_requests_total" and dict(labels)["route"] == "/items/<item_id>"
    )


def hit(url: str, keys: list[str]) -> None:
    for key in keys:  # each on a new connection: either worker may answer
        assert requests.get(f"{url}/items/{key}", timeout=5).status_code in (200, 404)


def test_counts_add_up_across_workers_a_death_and_a_reload(start_server, tmp_path):
    path = tmp_path / "current.data"
    pairs = list(make_data.pairs(200, seed=9))
    path.write_text("".join(f"{k} old:{v}\n" for k, v in pairs))
    server = start_server(path, "--workers", "2")
    keys = [k for k, _ in pairs]
    hit(server.url, keys[:100] + ["00000000-0000-4000-8000-000000000000"] * 20)
    samples = scrape(server.url)
    assert item_requests(samples) == 120
    assert samples[("kv_lookups_total", (("result", "found"),))] == 100
    assert samples[("kv_lookups_total", (("result", "missing"),))] == 20
    assert (
        samples[("kv_http_request_duration_seconds_count", (("route", "/items/<item_id>"),))] == 120
    )

    # A worker killed and replaced: what it counted is neither lost nor doubled.
    before = set(bench.children(server.proc.pid))
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(set(bench.children(server.proc.pid)) - {victim}) == 2)
    hit(server.url, keys[100:130])
    assert item_requests(scrape(server.url)) == 150

    # A reload: counted, and the data info moves to the new version.
    old_version = requests.get(f"{server.url}/readyz", timeout=5).json()["version"]
    path.write_text("".join(f"{k} new:{v}\n" for k, v in pairs))
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload done" in server.log())

    seen = []

    def new_worker_answers() -> bool:  # old workers answer a little longer while they stop
        seen.append(requests.get(f"{server.url}/readyz", timeout=5).json()["version"])
        return seen[-1] != old_version

    wait_for(new_worker_answers)
    new_version = seen[-1]

    def info(samples, version):
        return [v for (n, labels), v in samples.items()
                if n == "kv_data_info" and dict(labels)["version"] == version]  # fmt: skip

    wait_for(lambda: info(scrape(server.url), old_version) in ([], [0.0]))
    samples = scrape(server.url)
    assert info(samples, new_version) == [1.0]
    assert samples[("kv_reloads_total", (("result", "succeeded"),))] == 1
    assert item_requests(samples) == 150


def test_a_server_counts_only_its_own_requests(start_server, data_file, data, tmp_path):
    """The metrics directory is the server's own: KV_METRICS_DIR emptied at start, or a new
    one; never one inherited from a parent process (in CI, another server's counts
    showed up in this one's)."""
    shared = tmp_path / "metrics"
    first = start_server(data_file, env={"KV_METRICS_DIR": str(shared)})
    hit(first.url, list(data)[:10])
    second = start_server(data_file, env={"PROMETHEUS_MULTIPROC_DIR": str(shared)})
    hit(second.url, list(data)[:3])
    assert item_requests(scrape(second.url)) == 3
    assert item_requests(scrape(first.url)) == 10
    first.stop()
    again = start_server(data_file, env={"KV_METRICS_DIR": str(shared)})  # emptied at start
    assert item_requests(scrape(again.url)) == 0
