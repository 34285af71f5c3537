"""A JSON-RPC gate in front of a development chain: reads and signed transactions only.

A development chain (anvil) answers ``anvil_*``, ``hardhat_*``, ``evm_*`` and ``debug_*``
methods that rewrite its state: set any account's balance or any contract's storage,
impersonate the owner, mine, revert to a snapshot. Every participant's container needs
the chain's RPC, so the compose federation puts this gate in front of anvil and gives
participants only the gate: it forwards a request (or a batch) only when every method in
it is in an allowed namespace (``eth_``, ``net_``, ``web3_``), and answers anything else
with a JSON-RPC error without forwarding it. ``eth_sendTransaction`` (an unlocked account
signing on the node's behalf) is refused too: participants sign their own transactions.
"""

from __future__ import annotations

import argparse
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

logger = logging.getLogger("lethe.rpc_gate")

ALLOWED_PREFIXES = ("eth_", "net_", "web3_")
REFUSED_METHODS = frozenset({"eth_sendTransaction", "eth_sign", "eth_signTransaction"})
"""In an allowed namespace but signing with the chain's unlocked (development) accounts."""
MAX_BODY_BYTES = 4 * 1024 * 1024
METHOD_NOT_ALLOWED = -32601


def allowed(method: object) -> bool:
    """Whether the gate forwards a call of ``method``."""
    return (
        isinstance(method, str)
        and method.startswith(ALLOWED_PREFIXES)
        and method not in REFUSED_METHODS
    )


def refusal(call: Any) -> dict[str, Any] | None:
    """The error answering one call the gate does not forward, or None to forward it."""
    method = call.get("method") if isinstance(call, dict) else None
    if allowed(method):
        return None
    return {
        "jsonrpc": "2.0",
        "id": call.get("id") if isinstance(call, dict) else None,
        "error": {
            "code": METHOD_NOT_ALLOWED,
            "message": f"method {method!r} is not available through this gate "
            f"(only {', '.join(p + '*' for p in ALLOWED_PREFIXES)}, and no unlocked signing)",
        },
    }


def make_handler(upstream: str, *, timeout: float = 60.0) -> type[BaseHTTPRequestHandler]:
    """A request handler forwarding allowed JSON-RPC POSTs to ``upstream``."""

    class Gate(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._reply(413, {"error": "request too large"})
                return
            try:
                body = json.loads(self.rfile.read(length))
            except (ValueError, UnicodeDecodeError):
                self._reply(
                    400,
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": -32700, "message": "parse error"},
                    },
                )
                return
            calls = body if isinstance(body, list) else [body]
            refused = [r for r in (refusal(c) for c in calls) if r is not None]
            if refused or not calls:
                # A batch is forwarded whole or not at all: nothing of it reaches the chain.
                answer = refused if isinstance(body, list) else refused[0] if refused else {}
                self._reply(200, answer)
                return
            try:
                reply = requests.post(upstream, json=body, timeout=timeout)
            except requests.RequestException as exc:
                self._reply(
                    502,
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {
                            "code": -32000,
                            "message": f"chain unreachable: {type(exc).__name__}",
                        },
                    },
                )
                return
            self.send_response(reply.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.content)))
            self.end_headers()
            self.wfile.write(reply.content)

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

    return Gate


def serve(listen: tuple[str, int], upstream: str) -> ThreadingHTTPServer:
    """A gate server on ``listen`` (not started: call ``serve_forever``)."""
    return ThreadingHTTPServer(listen, make_handler(upstream))


def main(argv: list[str] | None = None) -> None:
    """``python -m infra.rpc_gate --listen 0.0.0.0:8545 --upstream http://chain:8545``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:8545", help="host:port to listen on")
    parser.add_argument("--upstream", required=True, help="the chain's JSON-RPC URL")
    args = parser.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    logging.basicConfig(level=logging.INFO)
    server = serve((host, int(port)), args.upstream)
    logger.info("RPC gate on %s → %s (eth_/net_/web3_ only)", args.listen, args.upstream)
    server.serve_forever()


if __name__ == "__main__":
    main()
