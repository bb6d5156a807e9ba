"""KVClient: a small client for a kv_app server over requests (one session, timeouts)."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from kv_app.keys import canonical_key, malformed
from kv_app.stores import ByGet


class KVError(Exception):
    """The server answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _canonical(key: object) -> str | None:
    """The canonical form of a key: a UUID string (either case) or a uuid.UUID; else None."""
    if isinstance(key, uuid.UUID):
        return str(key)
    return canonical_key(key)


def _checked(key: object) -> str:
    """The canonical form of key; ValueError, as the server's 400, if it is no UUID."""
    canonical = _canonical(key)
    if canonical is None:
        raise ValueError(malformed(key))
    return canonical


def normal_url(url: str) -> str:
    """url without its trailing slash, http:// assumed when no scheme is given
    (`127.0.0.1:8123`); ValueError for a scheme other than http and https."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{url}: a kv_app server's URL starts with http:// or https://")
    return url.rstrip("/")


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise KVError(
            f"HTTP {response.status_code}: not a kv_app answer (not JSON)", response.status_code
        ) from None


class KVUnavailable(KVError):
    """The server could not be reached, or answered 502/503/504, after the retries."""


class KVPartial(KVUnavailable):
    """get_many could look up only some of the ids (a shard, or one batch, could not
    answer): `items` holds the values found among the others (as get_many returns them),
    `unavailable` the ids it could not look up (lower-case, in the order asked). An id in neither was
    looked up and is not in the data."""

    def __init__(
        self, message: str, items: dict[str, str], unavailable: list[str], status: int | None
    ):
        super().__init__(message, status)
        self.items = items
        self.unavailable = unavailable


# Statuses a proxy or a starting server gives for a moment: worth another try.
_RETRY_STATUSES = (502, 503, 504)


class KVClient(ByGet):
    """Same verbs as the store: get, [], in, plus get_many. Keys are UUID strings (either
    case) or uuid.UUID objects, checked here as the server checks them: a malformed key raises ValueError for get,
    [] and get_many, and is simply not `in` the store. A key the server does not have is
    None (get), KeyError ([]) or False (in); a server that cannot answer raises
    KVUnavailable (after `retries` tries with exponential backoff: every call only reads,
    the batch POST included); any other failure is a KVError.

    get_many sends a request per batch_size ids, and per shard when the server is the
    front of a split snapshot: when some of them cannot be answered (a shard down), it
    raises KVPartial (a KVUnavailable) carrying the values of the others (`.items`) and
    the ids it could not look up (`.unavailable`), named in its message too.

    A client is not iterable (a server does not list its keys): list(kv) is a TypeError.
    base_url may leave out the scheme (`127.0.0.1:8123`): http:// is assumed.

    etags=True keeps the last answers (up to etag_cache) and asks again with their ETag:
    an unchanged value costs a 304 with no body.

    >>> with KVClient("http://127.0.0.1:8123") as kv:
    ...     kv.get("3fa85f64-5717-4562-b3fc-2c963f66afa6")
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8123",
        timeout: float | tuple[float, float] = (3.05, 10.0),
        session: requests.Session | None = None,
        batch_size: int = 1000,
        retries: int = 2,
        backoff: float = 0.05,
        etags: bool = False,
        etag_cache: int = 10_000,
    ):
        self.base_url = normal_url(base_url)
        self.batch_size = batch_size
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            retry = Retry(
                total=retries,
                connect=retries,
                read=retries,
                status=retries,
                status_forcelist=_RETRY_STATUSES,
                allowed_methods=frozenset({"GET", "HEAD", "POST"}),  # all of them only read
                backoff_factor=backoff,
                raise_on_status=False,
            )
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
        self.session = session
        self._shards: list[dict] | None = None  # the server's shard map, once read
        self._etags: OrderedDict[str, tuple[str, str]] | None = OrderedDict() if etags else None
        self._etag_cache = etag_cache

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as e:
            raise KVUnavailable(f"cannot reach {self.base_url}: {e}") from e
        if response.status_code in _RETRY_STATUSES:
            raise KVUnavailable(
                f"HTTP {response.status_code} from {self.base_url}", response.status_code
            )
        return response

    @staticmethod
    def _raise(response: requests.Response) -> None:
        try:
            body = response.json()
            message = body["message"]
            if "ids" in body:
                message += ": " + ", ".join(map(repr, body["ids"][:10]))
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason
        if response.status_code == 400:
            raise ValueError(message)
        raise KVError(f"HTTP {response.status_code}: {message}", response.status_code)

    def get(self, key: str | uuid.UUID, default: str | None = None) -> str | None:
        """The value of key, or default when the server has no such key.

        Raises ValueError for a malformed key and KVError for other errors.
        """
        key = _checked(key)
        headers = {"Accept": "application/json"}
        held = self._etags.get(key) if self._etags is not None else None
        if held is not None:
            headers["If-None-Match"] = held[0]
        response = self._request("GET", f"/items/{key}", headers=headers)
        if response.status_code == 304 and held is not None:
            self._etags.move_to_end(key)
            return held[1]
        if response.status_code == 404:
            if self._etags is not None:
                self._etags.pop(key, None)
            return default
        if response.status_code != 200:
            self._raise(response)
        body = _json(response)
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise KVError(f"HTTP 200: unexpected answer for {key}", 200)
        if self._etags is not None and response.headers.get("ETag"):
            self._etags[key] = (response.headers["ETag"], body["value"])
            self._etags.move_to_end(key)
            while len(self._etags) > self._etag_cache:
                self._etags.popitem(last=False)
        return body["value"]

    def get_many(self, keys: Iterable[str | uuid.UUID]) -> dict[str, str]:
        """Lower-case id -> value for each of keys the server has (POST /items/batch).

        Sends batch_size ids a request (a request per shard's part, for a split snapshot).
        Raises ValueError naming malformed keys (before sending anything), and KVPartial
        (with the values found and the ids not looked up) when some requests cannot be
        answered.
        """
        given = list(keys)
        keys = [_canonical(key) for key in given]
        bad = [key for key, canonical in zip(given, keys, strict=True) if canonical is None]
        if bad:
            shown = ", ".join(map(repr, bad[:10])) + (" ..." if len(bad) > 10 else "")
            raise ValueError(f"{len(bad)} malformed ids: each must be a UUID string: {shown}")
        found: dict[str, str] = {}
        unavailable: list[str] = []
        failures: dict[str, KVUnavailable] = {}  # where -> its last failure
        for where, path, part in self._routes(keys):
            for i in range(0, len(part), self.batch_size):
                ids = part[i : i + self.batch_size]
                try:
                    response = self._request("POST", path, json={"ids": ids})
                except KVUnavailable as e:
                    # The others may still answer (another shard): keep going.
                    unavailable.extend(ids)
                    failures[where] = e
                    continue
                if response.status_code != 200:
                    self._raise(response)
                body = _json(response)
                if not isinstance(body, dict) or not isinstance(body.get("items"), dict):
                    raise KVError("HTTP 200: unexpected answer to a batch", 200)
                found.update(body["items"])
        if unavailable:
            missed = set(unavailable)
            unavailable = [key for key in dict.fromkeys(keys) if key in missed]  # as asked
            shown = ", ".join(map(repr, unavailable[:5])) + (" ..." if len(unavailable) > 5 else "")
            causes = "; ".join(f"{where}: {e}" for where, e in failures.items())
            raise KVPartial(
                f"{len(unavailable)} of {len(keys)} ids could not be looked up ({causes}): {shown}",
                found,
                unavailable,
                next(iter(failures.values())).status,
            )
        return found

    def _routes(self, keys: list[str]) -> list[tuple[str, str, list[str]]]:
        """(where, path, keys) per batch route: one for a whole snapshot, one per shard
        when the server holds a shard of a split one (its /readyz publishes the shard map,
        any shard's; a front routes /shards/<n>/... to shard n)."""
        if self._shards is None:
            self._shards = self.ready().get("shard_map") or []
        if not self._shards:
            return [(self.base_url, "/items/batch", keys)]
        from kv_app.keyspace import shard_by_digit  # numpy: only for a split snapshot

        by_digit = shard_by_digit(self._shards)
        parts: dict[int, list[str]] = {}
        for key in keys:
            parts.setdefault(by_digit[key[0].lower()], []).append(key)
        return [
            (f"shard {n}", f"/shards/{n}/items/batch", part) for n, part in sorted(parts.items())
        ]

    def __iter__(self):
        # Without this, Python iterates by calling kv[0], kv[1] ...: list(kv) raised
        # "malformed id 0".
        raise TypeError(
            "KVClient is not iterable: a server does not list its keys; use get_many(ids)"
        )

    def __contains__(self, key: object) -> bool:
        key = _canonical(key)
        if key is None:
            return False
        response = self._request("HEAD", f"/items/{key}")
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            self._raise(response)
        return True

    def ready(self) -> dict:
        """The server's /readyz answer."""
        response = self._request("GET", "/readyz")
        if response.status_code != 200:
            self._raise(response)
        return _json(response)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> KVClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
