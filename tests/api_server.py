"""The API test server (waitress on a free loopback port) and its constants; importable
by tests (the fixtures live in ``tests.api_fixtures``, loaded as a plugin)."""

import threading
from collections.abc import Generator

from flask import Flask

from coordinator.server import create_server
from protocol.commitments import RecordKey

TOKEN = "test-token-0123456789"
FED = "fed-test"
RECORD_KEY = RecordKey(FED, bytes(range(32)))
"""The federation's record key the test API computes commitments with."""
NODE = "0x" + "11" * 20
RECORDS = ("rec-1", "rec-2")


def commitment(record_id: str) -> str:
    """The record commitment the API looks up for ``record_id`` in federation ``FED``."""
    return RECORD_KEY.commitment_hex(record_id)


def serve(app: Flask) -> Generator[str, None, None]:
    """Serve ``app`` with waitress on a free loopback port until the generator closes."""
    server = create_server(app, "127.0.0.1", 0, threads=4)
    closed = threading.Event()

    def run() -> None:
        try:
            server.run()
        except OSError:  # select() on the sockets close() just shut: the normal end
            if not closed.is_set():
                raise

    threading.Thread(target=run, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        closed.set()
        server.close()  # its loop notices within a second; the thread is a daemon
