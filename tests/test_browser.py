"""In headless Chromium (skipped where it is not installed): a page on another origin
calls a real server (CORS, the batch's preflight, an error's body), and /docs and /redoc
render offline under their Content-Security-Policy, the lookups first."""

from __future__ import annotations

import contextlib
import html
import http.server
import json
import re
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import Server, free_port, run_in_group

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

# The page's script: each call's outcome, as JSON, into <pre id="out">.
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>another origin</title></head>
<body><pre id="out">pending</pre>
<script>
const base = %(base)s, key = %(key)s;
async function call(path, init) {
  try {
    const r = await fetch(base + path, init);
    return {status: r.status, etag: r.headers.get("ETag"),
            version: r.headers.get("X-Data-Version"), body: await r.json()};
  } catch (e) {
    return {error: String(e)};
  }
}
(async () => {
  const out = {
    get: await call("/items/" + key),
    batch: await call("/items/batch", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({ids: [key, "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0aff"]})}),
    missing: await call("/items/0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0aff"),
    bad: await call("/items/batch", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: "{\\"ids\\": [1]}"}),
  };
  document.getElementById("out").textContent = JSON.stringify(out);
})();
</script></body></html>
"""


@contextlib.contextmanager
def page_server(page: str, port: int):
    """A tiny site on another origin (127.0.0.1, another port) serving page at /."""
    body = page.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def chromium(url: str, tmp_path: Path, budget_ms: int = 5000) -> tuple[str, str]:
    """(the DOM after the page ran, Chromium's log): a headless Chromium in a process
    group of its own, with a fresh profile, every process of it stopped however it ends."""
    profile = tempfile.mkdtemp(dir=tmp_path, prefix="chromium-")
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--log-level=0",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        url,
    ]
    done = run_in_group(command, timeout=120)  # its zygote and renderers too
    return done.stdout, done.stderr


def outcome(dom: str) -> dict:
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def key_value(data):
    return next(iter(data.items()))


def run_page(start_server, data_file, key, tmp_path, allowed: bool) -> dict:
    """The calls' outcomes of a page on a new origin, allowed by the server or not."""
    # The page's origin must be known to the server: its port is taken first.
    site_port = free_port()
    origin = f"http://127.0.0.1:{site_port}"
    server = start_server(
        data_file, env={"KV_CORS_ORIGINS": origin if allowed else "https://other.example"}
    )
    page = PAGE % {"base": json.dumps(server.url), "key": json.dumps(key)}
    with page_server(page, site_port) as site:
        dom, log = chromium(site + "/", tmp_path)
    return outcome(dom) | {"log": log}


def test_a_page_on_an_allowed_origin_calls_the_api(start_server, data_file, key_value, tmp_path):
    key, value = key_value
    got = run_page(start_server, data_file, key, tmp_path, allowed=True)
    assert got["get"]["status"] == 200 and got["get"]["body"] == {"id": key, "value": value}
    # Exposed headers are readable from the other origin.
    assert got["get"]["etag"].startswith('"') and got["get"]["version"]
    # The POST of JSON needs a preflight: the browser made it and went on.
    assert got["batch"]["status"] == 200
    assert got["batch"]["body"]["items"] == {key: value}
    # Errors carry the CORS headers: the page reads why.
    assert got["missing"]["status"] == 404 and got["missing"]["body"]["error"] == "Not Found"
    assert got["bad"]["status"] == 400 and got["bad"]["body"]["ids"] == [1]


def test_a_page_on_another_origin_is_refused(start_server, data_file, key_value, tmp_path):
    key, _ = key_value
    got = run_page(start_server, data_file, key, tmp_path, allowed=False)
    for call in ("get", "batch", "missing", "bad"):
        assert "Failed to fetch" in got[call].get("error", ""), got[call]
    assert "blocked by CORS policy" in got["log"]


@pytest.fixture(scope="module")
def docs_server(data_file):
    server = Server(data_file)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def refused(log: str) -> list[str]:
    """What the page's CSP blocked (Chromium's console, on stderr at --log-level=0), but
    the one thing it must: ReDoc's footer logo from its CDN."""
    return [
        line
        for line in log.splitlines()
        if "Content Security Policy" in line and "cdn.redoc.ly" not in line
    ]


def test_swagger_ui_renders_lookups_first_with_try_it_out(docs_server, tmp_path):
    dom, log = chromium(docs_server.url + "/docs", tmp_path, budget_ms=10000)
    items, health = dom.find('id="operations-tag-items"'), dom.find('id="operations-tag-health"')
    assert 0 <= items < health, dom[-3000:]
    assert "Try it out" in dom
    assert "POST /items/batch" in html.unescape(dom) or "/items/batch" in dom
    assert not refused(log), refused(log)


def test_redoc_renders_under_its_strict_policy(docs_server, tmp_path):
    dom, log = chromium(docs_server.url + "/redoc", tmp_path, budget_ms=10000)
    assert "cdn.redoc.ly/redoc/logo-mini.svg" in log  # blocked, and the log shows it
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    assert "Look up the value of one id" in text, dom[-3000:]
    assert text.find("Look up the value of one id") < text.find("Liveness")
    assert not refused(log), refused(log)
