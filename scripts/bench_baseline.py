"""The baselines of scripts/bench.py and bench_cpu.py, run under the same gunicorn
settings (kv_app/gunicorn_conf.py): `app`, the smallest Flask app that answers GET
/items/<id> with a constant string (the framework's ceiling), and `wsgi`, a bare WSGI
callable answering a constant (the stack's floor)."""

from flask import Flask

app = Flask(__name__)


@app.get("/items/<item_id>")
def item(item_id: str) -> str:
    return "constant"


def wsgi(environ, start_response):
    """The stack's floor: a bare WSGI callable answering a constant, no framework."""
    body = b"constant"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
    return [body]
