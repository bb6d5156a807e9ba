"""The baselines of scripts/bench.py and bench_cpu.py, run under the same gunicorn
settings (kv_app/gunicorn_conf.py): `app`, the smallest Flask app that answers GET
/items/<id> with a constant string (the framework's ceiling), `wsgi`, a bare WSGI
callable answering a constant (the stack's floor), and `wsgi_answer`, the same with a
kv_app answer's headers and size."""

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


# A kv_app answer's headers and a body of the same size, as constants.
_ANSWER = b'{"id":"3fa85f64-5717-4562-b3fc-2c963f66afa6","value":"' + b"v" * 40 + b'"}'
_ANSWER_HEADERS = [
    ("Vary", "Accept"),
    ("X-Data-Version", "0123456789abcdef"),
    ("ETag", '"0123456789abcdef-3fa85f64-5717-4562-b3fc-2c963f66afa6-j"'),
    ("Cache-Control", "public, max-age=60"),
    ("Last-Modified", "Mon, 30 Nov 2026 12:00:00 GMT"),
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(_ANSWER))),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Request-ID", "0123456789abcdef0123456789abcdef"),
]


def wsgi_answer(environ, start_response):
    """The floor for kv_app's answer: a bare WSGI callable sending the same headers and
    as many bytes, constant (what gunicorn costs for the answer itself, without a lookup)."""
    start_response("200 OK", list(_ANSWER_HEADERS))
    return [_ANSWER]
