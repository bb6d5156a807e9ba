"""The WSGI entry point and the only module-level app: `gunicorn -c gunicorn.conf.py`.

Settings come from KV_* environment variables (KV_DATA_PATH is required). A data file
that cannot be served stops start-up with one line on stderr and exit status 1.
"""

import logging
import sys

from kv_app.app import create_app
from kv_app.config import ConfigError
from kv_app.loader import LoadError

logging.basicConfig(
    level=logging.INFO, format="%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
)

try:
    app = create_app()
except (LoadError, ConfigError) as e:
    print(f"kv-app: {e}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None
