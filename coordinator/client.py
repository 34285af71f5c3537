"""A small client of the coordinator API, for the `lethe forget/status/rounds` commands.

It speaks only the documented HTTP API (``/openapi.json``); every failure becomes an
:class:`ApiError` that says what to do next.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from protocol.errors import LetheError

DONE_STATES = ("completed", "failed")


class ApiError(LetheError):
    """The API refused a request (``status`` is its HTTP status) or could not be reached
    (``status`` is None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """Calls to one coordinator API; ``token`` is needed to submit requests and to see
    their record ids (sent with every call when given)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session = requests.Session()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        if self.token:
            kwargs["headers"] = {**self._headers(), **kwargs.get("headers", {})}
        try:
            res = self._session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ApiError(
                f"cannot reach the coordinator API at {self.url} ({type(exc).__name__}): "
                "is `lethe up` running? Point at another with --api or LETHE_API_URL"
            ) from exc
        try:
            body = res.json()
        except ValueError:
            body = None
        if res.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise ApiError(
                f"{method} {path} → {res.status_code}: {message or res.text[:200]}",
                res.status_code,
            )
        return res.status_code, body

    def forget(self, record_id: str, request_id: str | None = None) -> tuple[dict[str, Any], bool]:
        """Submit a forget request; return it and whether it is new (202) or known (200)."""
        body: dict[str, Any] = {"record_id": record_id}
        if request_id:
            body["request_id"] = request_id
        status, request = self._call(
            "POST", "/forget", json=body, headers={"Authorization": f"Bearer {self.token or ''}"}
        )
        return dict(request), status == 202

    def feedback(self, record_id: str, text: str) -> dict[str, Any]:
        """Score one text with the global model; the answer says the decision and any
        forget request it opened."""
        return dict(
            self._call(
                "POST",
                "/feedback",
                json={"record_id": record_id, "text": text},
                headers={"Authorization": f"Bearer {self.token or ''}"},
            )[1]
        )

    def health(self) -> dict[str, Any]:
        """The federation's health (``GET /health``): a 503 is an answer here, not an error.
        With the token it names the nodes and the records several of them hold."""
        try:
            res = self._session.get(
                f"{self.url}/health", headers=self._headers(), timeout=self.timeout
            )
            body = res.json()
        except (requests.RequestException, ValueError) as exc:
            raise ApiError(f"cannot reach the coordinator API at {self.url}: {exc}") from exc
        if res.status_code not in (200, 503) or not isinstance(body, dict):
            raise ApiError(f"GET /health → {res.status_code}: {res.text[:200]}", res.status_code)
        return body

    def status(self, request_id: str) -> dict[str, Any]:
        """One request's state, transactions and certificate."""
        return dict(self._call("GET", f"/forget/{quote(request_id, safe='')}")[1])

    def receipt(self, request_id: str) -> dict[str, Any]:
        """The owner node's receipt of a certified request (needs the token)."""
        return dict(self._call("GET", f"/forget/{quote(request_id, safe='')}/receipt")[1])

    def requests(self) -> list[dict[str, Any]]:
        """Every forget request, oldest first."""
        return list(self._call("GET", "/forget")[1])

    def rounds(self) -> list[dict[str, Any]]:
        """Every round the coordinator ran."""
        return list(self._call("GET", "/rounds")[1])

    def wait(
        self,
        request_id: str,
        *,
        timeout: float = 600.0,
        poll: float = 0.5,
        on_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the request is completed or failed, calling ``on_state`` on each change."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            request = self.status(request_id)
            if request["state"] != last:
                last = request["state"]
                if on_state is not None:
                    on_state(request)
            if request["state"] in DONE_STATES:
                return request
            if time.monotonic() >= deadline:
                raise ApiError(
                    f"request {request_id} still {last} after {timeout:.0f} s; "
                    f"follow it with `lethe status {request_id}`"
                )
            time.sleep(poll)
