"""KVClient: a small client for a kv_app server over requests (one session, timeouts)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests


class KVError(Exception):
    """The server answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class KVClient:
    """Same verbs as the store: get, [], in, plus get_many. Keys may be in either case.

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
        response = self._request("GET", f"/items/{key}", headers={"Accept": "application/json"})
        if response.status_code == 404:
            return default
        if response.status_code != 200:
            self._raise(response)
        return response.json()["value"]

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """Lower-case id -> value for each of keys the server has (POST /items/batch).

        Sends batch_size ids a request. Raises ValueError naming malformed keys.
        """
        keys = list(keys)
        found: dict[str, str] = {}
        for i in range(0, len(keys), self.batch_size):
            response = self._request(
                "POST", "/items/batch", json={"ids": keys[i : i + self.batch_size]}
            )
            if response.status_code != 200:
                self._raise(response)
            found.update(response.json()["items"])
        return found

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
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
        return response.json()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> KVClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
