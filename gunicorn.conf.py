"""gunicorn settings for a checkout: `KV_DATA_PATH=my.data gunicorn -c gunicorn.conf.py`.

The settings and hooks live in the package (kv_app/gunicorn_conf.py), so an installed
kv_app serves the same way: `gunicorn -c python:kv_app.gunicorn_conf`.
"""

from kv_app.gunicorn_conf import *  # noqa: F403  (settings and hooks)
