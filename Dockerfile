# kv_app: gunicorn serving a data file from a directory mounted read-only at /data.
#   docker build -t kv-app:VERSION -t kv-app:latest .   (scripts/build.sh)
#   docker run -p 8123:8123 -v "$PWD/data:/data:ro" -e KV_DATA_PATH=/data/my.data kv-app
#                                     (scripts/run.sh my.data)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY constraints.txt setup.cfg pyproject.toml README.md LICENSE MANIFEST.in ./
COPY kv_app kv_app
# Every version pinned by constraints.txt, the same file scripts/test.sh installs with.
RUN pip install --constraint constraints.txt . \
    && useradd --system --no-create-home --uid 10001 kv

# Settings: see README "Configuration". Mount the data file's directory at /data
# (read-only) and name the file in KV_DATA_PATH; it must be readable by uid 10001.
ENV KV_HOST=0.0.0.0 \
    KV_PORT=8123 \
    KV_DATA_PATH=/data/data.file
USER kv
EXPOSE 8123
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('KV_PORT', '8123'), timeout=2)"]
# Exec form: gunicorn is PID 1 and gets SIGTERM directly (graceful shutdown) and SIGHUP
# (reload the data). The settings are the installed package's, as for `kv-app serve`.
CMD ["gunicorn", "--config", "python:kv_app.gunicorn_conf"]
