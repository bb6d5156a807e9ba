"""KVClient: a small client for a kv_app server over requests (one session, timeouts)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests

from kv_app.keys import canonical_key, malformed


class KVError(Exception):
    """The server answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _checked(key: object) -> str:
    """The canonical form of key; ValueError, as the server's 400, if it is no UUID."""
    canonical = canonical_key(key)
    if canonical is None:
        raise ValueError(malformed(key))
    return canonical


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise KVError(
            f"HTTP {response.status_code}: not a kv_app answer (not JSON)", response.status_code
        ) from None


class KVClient:
    """Same verbs as the store: get, [], in, plus get_many. Keys may be in either case and
    are checked here as the server checks them: a malformed key raises ValueError for get,
    [] and get_many, and is simply not `in` the store. Any other failure is a KVError.

    >>> with KVClient("http://127.0.0.1:8123") as kv:
    ...     kv.get("3fa85f64-5717-4562-b3fc-2c963f66afa6")
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8123",
        timeout: float | tuple[float, float] = (3.05, 10.0),
        session: requests.Session | None = None,
        batch_size: int = 1000,
    ):
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.timeout = timeout
        self.session = session or requests.Session()
        self._shards: list[dict] | None = None  # the server's shard map, once read

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as e:
            raise KVError(f"cannot reach {self.base_url}: {e}") from e

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

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of key, or default when the server has no such key.

        Raises ValueError for a malformed key and KVError for other errors.
        """
        key = _checked(key)
        response = self._request("GET", f"/items/{key}", headers={"Accept": "application/json"})
        if response.status_code == 404:
            return default
        if response.status_code != 200:
            self._raise(response)
        body = _json(response)
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise KVError(f"HTTP 200: unexpected answer for {key}", 200)
        return body["value"]

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """Lower-case id -> value for each of keys the server has (POST /items/batch).

        Sends batch_size ids a request. Raises ValueError naming malformed keys (before
        sending anything).
        """
        keys = list(keys)
        bad = [key for key in keys if canonical_key(key) is None]
        if bad:
            shown = ", ".join(map(repr, bad[:10])) + (" ..." if len(bad) > 10 else "")
            raise ValueError(f"{len(bad)} malformed ids: each must be a UUID string: {shown}")
        found: dict[str, str] = {}
        for path, part in self._routes(keys):
            for i in range(0, len(part), self.batch_size):
                response = self._request("POST", path, json={"ids": part[i : i + self.batch_size]})
                if response.status_code != 200:
                    self._raise(response)
                body = _json(response)
                if not isinstance(body, dict) or not isinstance(body.get("items"), dict):
                    raise KVError("HTTP 200: unexpected answer to a batch", 200)
                found.update(body["items"])
        return found

    def _routes(self, keys: list[str]) -> list[tuple[str, list[str]]]:
        """(path, keys) per batch route: one for a whole snapshot, one per shard when the
        server holds a shard of a split one (its /readyz publishes the shard map; a front
        routes /shards/<n>/... to shard n)."""
        if self._shards is None:
            self._shards = self.ready().get("shard_map") or []
        if not self._shards:
            return [("/items/batch", keys)]
        by_digit = {d: s["index"] for s in self._shards for d in s["digits"]}
        parts: dict[int, list[str]] = {}
        for key in keys:
            parts.setdefault(by_digit[key[0].lower()], []).append(key)
        return [(f"/shards/{n}/items/batch", part) for n, part in sorted(parts.items())]

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        key = canonical_key(key)
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
