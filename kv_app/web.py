"""What a browser or an HTTP client on another origin needs besides the API itself:
CORS (flask-cors) for the origins KV_CORS_ORIGINS lists, and gzip (flask-compress) for
answers of at least KV_COMPRESS_MIN_BYTES. Both are off the hot path: the lean path
(kv_app/lean.py) hands to Flask what they would change, and adds the few constant
headers they give every answer (web_headers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Flask, Response, request
from flask_compress import Compress
from flask_cors import CORS

from kv_app.config import ConfigError

WEB = "kv_web"  # the key of the app's Web in app.extensions
# Only JSON and text (the answers); not the docs' assets, which are static files.
COMPRESSED_TYPES = ("application/json", "text/plain")
# gzip alone: every client speaks it (curl --compressed, requests, browsers), the answers
# are small JSON where brotli gains little, and one encoding is one more cache entry at
# most in a front's cache (deploy/nginx-cache.conf honours Vary).
ALGORITHMS = ("gzip",)
# Headers a page on another origin may read besides the safelisted ones.
EXPOSED = ("ETag", "X-Data-Version", "X-Request-ID")
# Browsers keep a preflight's answer this long (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE = 600
_ORIGIN = re.compile(
    r"https?://(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?"
)


def cors_origins(raw: str | None) -> tuple[str, ...]:
    """The origins a KV_CORS_ORIGINS value allows: () for none (CORS off), ("*",) for
    any; else each a scheme, a host and perhaps a port, as a browser sends it."""
    parts = [p.strip() for p in (raw or "").split(",") if p.strip()]
    if parts == ["*"]:
        return ("*",)
    for part in parts:
        if part == "*":
            raise ConfigError(f"CORS_ORIGINS={raw!r}: '*' allows any origin: give it alone")
        port = part.rsplit(":", 1)[-1]
        if (
            not _ORIGIN.fullmatch(part)
            or part != part.lower()
            or (port.isdigit() and not 0 < int(port) < 65536)
        ):
            raise ConfigError(
                f"CORS_ORIGINS={raw!r}: {part!r} is not an origin: expected a scheme, a "
                "lower-case host and perhaps a port, such as https://app.example or "
                "http://127.0.0.1:8080 (no path, no trailing slash), or * alone"
            )
    return tuple(dict.fromkeys(parts))


@dataclass(frozen=True)
class Web:
    """What CORS and compression add to the answers, as the lean path needs it."""

    origins: tuple[str, ...]  # () when CORS is off
    min_bytes: int  # 0: compression off

    @property
    def any_origin(self) -> bool:
        return self.origins == ("*",)

    def vary(self, compressible: bool) -> str:
        """The Vary of an item or batch answer (whose own Vary is Accept)."""
        vary = "Accept, Accept-Encoding" if compressible else "Accept"
        return vary + ", Origin" if self.origins and not self.any_origin else vary

    def cors_headers(self) -> tuple[tuple[str, str], ...]:
        """What flask-cors adds to an answer to a request without Origin: with any origin
        allowed, the same to all (so a shared cache may serve it to every origin)."""
        if not self.any_origin:
            return ()
        return (
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Expose-Headers", ", ".join(EXPOSED)),
        )

    def compressible(self, content_type: str | None, status: int, size: int | None) -> bool:
        """Would an answer be gzipped for a client that accepts it (and so vary on
        Accept-Encoding)?"""
        return (
            self.min_bytes > 0
            and 200 <= status < 300
            and (content_type or "").split(";")[0].strip() in COMPRESSED_TYPES
            and size is not None
            and size >= self.min_bytes
        )


def init_web(app: Flask) -> None:
    """CORS and compression as the settings say (ConfigError for a bad origin)."""
    web = app.extensions[WEB] = Web(
        cors_origins(app.config["CORS_ORIGINS"]), app.config["COMPRESS_MIN_BYTES"]
    )
    if web.origins:
        CORS(
            app,
            origins=list(web.origins),
            methods=["GET", "HEAD", "POST", "OPTIONS"],
            expose_headers=list(EXPOSED),
            max_age=PREFLIGHT_MAX_AGE,
            # "*" answers every origin alike: "Access-Control-Allow-Origin: *", no Vary.
            send_wildcard=web.any_origin,
            # A list: nothing without Origin, and Vary: Origin on every answer (set
            # below: flask-cors would add it only to the allowed origins' answers, so a
            # shared cache could serve a 200 without the header to an allowed origin).
            always_send=web.any_origin,
            vary_header=False,
        )
    if web.origins and not web.any_origin:

        @app.after_request  # registered first: runs after compressed (Flask's order)
        def vary_origin(response: Response) -> Response:
            """Every answer depends on Origin (see above)."""
            vary = response.headers.get("Vary")
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
            return response

    if web.min_bytes:
        app.config.update(
            COMPRESS_REGISTER=False,  # compress() below decides which answers
            COMPRESS_ALGORITHM=list(ALGORITHMS),
            COMPRESS_MIMETYPES=list(COMPRESSED_TYPES),
            COMPRESS_MIN_SIZE=web.min_bytes,
            COMPRESS_STREAMS=False,
            # gzip level 1: a batch answer of 1000 values (100 KB) in 0.47 ms to 25 KB,
            # where level 6 takes 1.07 ms for 23.5 KB, about as much CPU as the batch.
            COMPRESS_LEVEL=1,
        )
        compress = Compress(app)

        @app.after_request
        def compressed(response: Response) -> Response:
            """gzip when the client accepts it; Vary: Accept-Encoding on the answers that
            may be gzipped, and only those (a small answer never is: a front's cache
            keeps one entry for it, whatever clients' Accept-Encoding)."""
            if not web.compressible(
                response.content_type, response.status_code, response.content_length
            ):
                return response
            # flask-compress 1.25 takes "gzip;q=0" (not acceptable) for a yes; werkzeug
            # reads qualities right.
            if request.accept_encodings.quality("gzip") > 0:
                # It appends ":gzip" to a strong ETag (the compressed bytes are another
                # representation), answers If-None-Match against it, and adds the Vary.
                return compress.after_request(response)
            vary = response.headers.get("Vary")
            response.headers["Vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
            return response
