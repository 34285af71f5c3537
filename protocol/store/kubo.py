"""The Kubo backend: any IPFS node's RPC API (``/api/v0``), over plain HTTP with timeouts."""

import json
from typing import Any
from urllib.parse import urlsplit

import requests

from protocol.cid import CHUNK_SIZE, cid_of, normalize_cid
from protocol.errors import StoreError

# Kubo's own `ipfs add --cid-version=1` profile, spelled out so a node whose
# Import.* defaults were changed still builds the DAG Lethe computes.
_ADD_PARAMS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "hash": "sha2-256",
    "chunker": f"size-{CHUNK_SIZE}",
    "cid-base": "base32",
    "pin": "true",
    "progress": "false",
}
_MULTIADDR_HOSTS = {"ip4", "ip6", "dns", "dns4", "dns6"}


def api_url(address: str) -> str:
    """Turn ``/ip4/HOST/tcp/PORT[/http|/https]`` or ``http(s)://HOST:PORT`` into a base URL.

    Raises ``ValueError`` saying which forms are accepted.
    """
    if address.startswith(("http://", "https://")):
        url = urlsplit(address)
        if url.hostname and url.port is not None:
            return f"{url.scheme}://{url.netloc}"
    elif is_api_address(address) and len(parts := address.strip("/").split("/")) in (4, 5):
        protocol, host, transport, port = parts[:4]
        scheme = parts[4] if len(parts) == 5 else "http"
        if transport == "tcp" and port.isdigit() and scheme in ("http", "https"):
            if protocol == "ip6":
                host = f"[{host}]"
            return f"{scheme}://{host}:{port}"
    raise ValueError(
        f"not an IPFS API address: {address!r} (use /ip4/HOST/tcp/PORT or http://HOST:PORT)"
    )


def is_api_address(spec: str) -> bool:
    """Tell whether ``spec`` names an IPFS API (multiaddr or URL) rather than a folder."""
    if spec.startswith(("http://", "https://")):
        return True
    return spec.startswith("/") and spec.split("/")[1] in _MULTIADDR_HOSTS


class KuboStore:
    """Content on an IPFS node through its RPC API; CIDs equal the local store's.

    ``timeout`` (seconds) bounds every step: connecting, each read, and, sent to
    the node as its own ``timeout`` option, how long it searches for a block, so
    an absent CID or a hung daemon ends in a :class:`StoreError`, never a hang.
    ``lookup_timeout`` bounds :meth:`has`, which asks the node for its local copy
    only (Kubo answers at once; js-ipfs ignores ``offline`` and waits this long).
    """

    def __init__(
        self, api_addr: str, *, timeout: float = 30.0, lookup_timeout: float = 2.0
    ) -> None:
        try:
            self._base = api_url(api_addr) + "/api/v0/"
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        self.api_addr = api_addr
        self.timeout = timeout
        self.lookup_timeout = lookup_timeout
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"KuboStore({self.api_addr!r})"

    def put(self, data: bytes) -> str:
        """Add and pin ``data``; check the node's CID equals the one Lethe computes."""
        response = self._call(
            "add", _ADD_PARAMS, files={"file": ("data", data, "application/octet-stream")}
        )
        lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        got = normalize_cid(lines[-1]["Hash"]) if lines and "Hash" in lines[-1] else None
        want = cid_of(data)
        if got != want:
            raise StoreError(
                f"IPFS node at {self.api_addr} stored the bytes as {got}, Lethe expects {want}: "
                "its import settings differ from Kubo's CIDv1 defaults"
            )
        return want

    def get(self, cid: str) -> bytes:
        """Fetch the bytes under ``cid`` and rebuild their DAG to check they match it."""
        key = self._key(cid)
        response = self._call("cat", {"arg": key}, node_timeout=self.timeout, stream=True)
        try:
            data = b"".join(response.iter_content(CHUNK_SIZE))
        except requests.RequestException as exc:
            raise self._failure("cat", exc) from exc
        if cid_of(data) != key:
            raise StoreError(
                f"IPFS node at {self.api_addr} returned {len(data)} bytes for {key} that do not "
                "hash to it (only content added with Kubo's CIDv1 raw-leaves profile verifies)"
            )
        return data

    def has(self, cid: str) -> bool:
        """Tell whether the node holds the root block of ``cid`` locally."""
        return self._answers_yes("block/stat", {"arg": self._key(cid), "offline": "true"})

    def pin(self, cid: str) -> None:
        """Pin ``cid`` recursively on the node (fetching it first if needed)."""
        self._call("pin/add", {"arg": self._key(cid)}, node_timeout=self.timeout)

    def pinned(self, cid: str) -> bool:
        """Tell whether the node pins ``cid`` recursively."""
        return self._answers_yes("pin/ls", {"arg": self._key(cid), "type": "recursive"})

    def _answers_yes(self, endpoint: str, params: dict[str, str]) -> bool:
        """Ask about the node's local state: an error answer means no, silence is a StoreError."""
        try:
            self._call(endpoint, params, node_timeout=self.lookup_timeout)
        except _NodeSaidNo:
            return False
        return True

    def _key(self, cid: str) -> str:
        try:
            return normalize_cid(cid)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc

    def _call(
        self,
        endpoint: str,
        params: dict[str, str],
        *,
        node_timeout: float | None = None,
        files: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """POST to the RPC API; raise StoreError naming the address on any failure."""
        query = dict(params)
        wait = self.timeout
        if node_timeout is not None:
            query["timeout"] = f"{round(node_timeout * 1000)}ms"
            # Leave the node time to report its own timeout, which says more.
            wait = node_timeout + min(5.0, self.timeout)
        try:
            response = self._session.post(
                self._base + endpoint,
                params=query,
                files=files,
                timeout=(self.timeout, wait),
                stream=stream,
            )
        except requests.RequestException as exc:
            raise self._failure(endpoint, exc) from exc
        if response.status_code != 200:
            raise _NodeSaidNo(
                f"IPFS node at {self.api_addr} refused {endpoint} {params.get('arg', '')}: "
                f"{_message(response)}"
            )
        return response

    def _failure(self, endpoint: str, exc: requests.RequestException) -> StoreError:
        if isinstance(exc, requests.Timeout):
            return StoreError(
                f"IPFS API at {self.api_addr} did not answer {endpoint} in time "
                f"(timeout {self.timeout:g} s)"
            )
        return StoreError(f"IPFS API at {self.api_addr} is unreachable: {exc}")


class _NodeSaidNo(StoreError):
    """The node answered with an error (absent block, not pinned, bad argument)."""


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} {response.text[:200]}"
    if isinstance(body, dict) and "Message" in body:
        return str(body["Message"])
    return f"HTTP {response.status_code} {body}"
