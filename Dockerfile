# kv_app: gunicorn serving a data file mounted read-only at /data/data.file.
#   docker build -t kv-app .          (scripts/build.sh)
#   docker run -p 8123:8123 -v "$PWD/my.data:/data/data.file:ro" kv-app   (scripts/run.sh)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY constraints.txt setup.cfg pyproject.toml README.md wsgi.py gunicorn.conf.py ./
COPY kv_app kv_app
# Every version pinned by constraints.txt, the same file scripts/test.sh installs with.
RUN pip install --constraint constraints.txt . \
    && useradd --system --no-create-home --uid 10001 kv

# Settings: see README "Configuration". The data file is mounted here read-only.
ENV KV_HOST=0.0.0.0 \
    KV_PORT=8123 \
    KV_DATA_PATH=/data/data.file
USER kv
EXPOSE 8123
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('KV_PORT', '8123'), timeout=2)"]
# Exec form: gunicorn is PID 1 and gets SIGTERM directly (graceful shutdown).
CMD ["gunicorn", "--config", "gunicorn.conf.py"]
