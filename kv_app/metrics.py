"""Prometheus metrics at /metrics, with the official prometheus_client, summed across
gunicorn workers by its multiprocess mode (the gunicorn settings point
PROMETHEUS_MULTIPROC_DIR at a fresh directory before anything imports it; dead workers
are marked on exit). Without that variable (tests, one process) a plain registry."""

from __future__ import annotations

import os
import re
import time

from flask import Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "kv_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "kv_http_request_duration_seconds",
    "Seconds from the request reaching the app to its answer, by route.",
    ["route"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
LOOKUPS = Counter("kv_lookups_total", "Ids looked up, by result.", ["result"])
BATCH_SIZE = Histogram(
    "kv_batch_size",
    "Ids asked for by one POST /items/batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 5000, 10000, 100000),
)
DATA = Gauge(
    "kv_data_info",
    "The data served: 1 for the current version (labels: its identity).",
    ["version", "store", "sha256"],
    multiprocess_mode="livemax",
)
PAIRS = Gauge("kv_data_pairs", "Pairs served.", multiprocess_mode="livemax")
MODIFIED = Gauge(
    "kv_data_modified_timestamp_seconds",
    "When the served data's source file was written (Unix time): its age is "
    "time() - kv_data_modified_timestamp_seconds.",
    multiprocess_mode="livemax",
)
LOADED = Gauge(
    "kv_data_loaded_timestamp_seconds",
    "When the served data was loaded or opened (Unix time).",
    multiprocess_mode="livemax",
)
RELOADS = Counter("kv_reloads_total", "Data reloads (SIGHUP), by result.", ["result"])

_current: tuple[str, str, str] | None = None
_enabled = True  # False: KV_METRICS=0, nothing counted (to measure what counting costs)
_ROUTES: dict[str, str] = {}
_CONVERTER = re.compile(r"<[^:<>]+:")


_FOUND, _MISSING = LOOKUPS.labels("found"), LOOKUPS.labels("missing")
# Labelled children, made once: labels() on every request cost more than the counting.
_REQUEST_CHILDREN: dict[tuple[str, str, int], tuple] = {}


def lookups(found: int, missing: int) -> None:
    """Count looked-up ids."""
    if _enabled:
        if found:
            _FOUND.inc(found)
        if missing:
            _MISSING.inc(missing)


def batch(size: int) -> None:
    if _enabled:
        BATCH_SIZE.observe(size)


def set_data(store) -> None:
    """The data gauges for store (the previous version's info goes to 0)."""
    global _current
    described = store.describe()
    labels = (described["version"], described["store"], described.get("sha256", ""))
    if _current is not None and _current != labels:
        DATA.labels(*_current).set(0)
    DATA.labels(*labels).set(1)
    _current = labels
    PAIRS.set(described["pairs"])
    for gauge, field in ((MODIFIED, "modified"), (LOADED, "loaded_at")):
        if described.get(field):
            gauge.set(_timestamp(described[field]))


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def route_of(rule: str | None) -> str:
    """The route label: the URL rule without converters (/items/<item_id>), never the path."""
    if rule is None:
        return "unmatched"
    if rule not in _ROUTES:
        _ROUTES[rule] = _CONVERTER.sub("<", rule)
    return _ROUTES[rule]


def _started() -> None:
    request.environ["kv.started"] = time.perf_counter()


def _counted(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule else None
    counted(request.method, rule, response.status_code, request.environ.get("kv.started"))
    return response


def counted(method: str, rule: str | None, status: int, started: float | None) -> None:
    """One request answered: its count, and its time since started (perf_counter)."""
    key = (method, rule, status)
    children = _REQUEST_CHILDREN.get(key)
    if children is None:
        route = route_of(rule)
        children = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(route))
        _REQUEST_CHILDREN[key] = children
    children[0].inc()
    if started is not None:
        children[1].observe(time.perf_counter() - started)


def scrape() -> Response:
    """GET /metrics: the Prometheus text format (every worker's counts added up)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_metrics(app: Flask) -> None:
    """Count every request and serve /metrics (unless the METRICS setting is off)."""
    global _enabled
    _enabled = app.config["METRICS"]
    if not _enabled:
        return
    app.before_request(_started)
    app.after_request(_counted)
    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])
