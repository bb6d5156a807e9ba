"""The framework's ceiling for scripts/bench.py: the smallest Flask app that answers
GET /items/<id> with a constant string, run under the same gunicorn settings (kv_app/gunicorn_conf.py)."""

from flask import Flask

app = Flask(__name__)


@app.get("/items/<item_id>")
def item(item_id: str) -> str:
    return "constant"
