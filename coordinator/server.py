"""Serving the API in production: waitress, one process, a pool of threads, an access log.

Why waitress rather than gunicorn: it runs in one process, so the explorer's incremental
audit and the rate limiter's buckets are one shared state (gunicorn's forked workers would
each replay the chain and each grant the full rate); it reads a whole request before the
application sees it (a slow client holds a socket, not a worker thread) and de-chunks
bodies, so the body limit holds for chunked uploads too; and it is pure Python, with no
platform it cannot run on.
"""

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from infra import logs
from infra.logs import log_context

ACCESS_LOG = "lethe.api.access"
_FORGET_PATH = re.compile(r"/forget/([A-Za-z0-9._-]{1,64})(?:/receipt)?")
"""A forget request's own routes: their lines name it (only well-formed ids)."""
# Bodies up to this size reach the app (which answers a JSON 413 past 4 KiB); past it
# waitress refuses the request itself, before buffering more.
SERVER_BODY_LIMIT = 1 << 20

StartResponse = Callable[..., Any]


def access_log(app: Callable[..., Iterable[bytes]], logger: logging.Logger) -> Callable[..., Any]:
    """WSGI middleware: one line per request (peer, method, path, status, seconds).

    Never logs headers or bodies (the token, record ids); the path is escaped so a client
    cannot forge log lines.
    """

    def logged(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        status = ["-"]

        def recording(code: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = code.split(" ", 1)[0]
            return start_response(code, headers, exc_info)

        path = environ.get("PATH_INFO", "").encode("unicode_escape").decode("ascii")
        named = _FORGET_PATH.fullmatch(path)
        try:
            return app(environ, recording)
        finally:
            with log_context(request_ids=[named[1]] if named else ()):
                logger.info(
                    '%s "%s %s" %s %.3fs',
                    environ.get("REMOTE_ADDR", "-"),
                    environ.get("REQUEST_METHOD", "-"),
                    path[:300],
                    status[0],
                    time.perf_counter() - started,
                )

    return logged


def create_server(app: Flask, host: str, port: int, *, threads: int = 8) -> Any:
    """A waitress server for ``app`` with the access log (port 0: any free port).

    ``.run()`` serves until ``.close()``; ``.effective_port`` is the bound port.
    """
    from waitress.server import create_server as waitress_server

    return waitress_server(
        access_log(app, logging.getLogger(ACCESS_LOG)),
        host=host,
        port=port,
        threads=threads,
        ident="lethe",
        max_request_body_size=SERVER_BODY_LIMIT,
        channel_timeout=30,
        connection_limit=200,
    )


def serve(app: Flask, host: str, port: int, *, threads: int = 8) -> None:
    """Serve ``app`` on waitress until interrupted, logging every request to stderr."""
    logs.configure("api", "%(asctime)s %(name)s %(message)s")
    server = create_server(app, host, port, threads=threads)
    logging.getLogger(ACCESS_LOG).info("serving on http://%s:%s", host, server.effective_port)
    try:
        server.run()
    finally:
        server.close()
