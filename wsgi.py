"""The WSGI app for `gunicorn wsgi:app` from a checkout; kv-app serve and the Docker
image use the packaged equivalent (kv_app.gunicorn_conf names kv_app.app:app_from_environ()).

Settings come from KV_* environment variables (KV_DATA_PATH is required).
"""

from kv_app.app import app_from_environ

app = app_from_environ()
