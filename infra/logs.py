"""Log lines for people (the default) or as JSON, each naming its round and forget requests.

With ``LETHE_LOG_FORMAT=json`` every Lethe process (the ServerApp, the API, each node;
children of `lethe up` inherit it) writes one JSON object per line::

    {"ts": "2026-12-07T20:31:02.118Z", "level": "INFO", "role": "node-1",
     "logger": "lethe.node", "msg": "…", "round": 4, "request_ids": ["req-7"], "pid": 81}

``round`` and ``request_ids`` come from :func:`log_context`, which the round loop, the
node's stage handler and the API's access log open around their work; so
``jq 'select(.request_ids | index("req-7"))'`` over all the logs follows one forget from
the API through the coordinator's rounds to the node that retrained. Flower's own lines
keep Flower's format.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

LOG_FORMAT_ENV = "LETHE_LOG_FORMAT"
FORMATS = ("text", "json")
_ROUND: ContextVar[int | None] = ContextVar("lethe_round", default=None)
_REQUESTS: ContextVar[tuple[str, ...]] = ContextVar("lethe_request_ids", default=())


@contextmanager
def log_context(*, round_no: int | None = None, request_ids: Iterable[str] = ()) -> Iterator[None]:
    """Name ``round_no`` and ``request_ids`` on every line logged inside (this thread)."""
    round_token = _ROUND.set(round_no)
    requests_token = _REQUESTS.set(tuple(request_ids))
    try:
        yield
    finally:
        _ROUND.reset(round_token)
        _REQUESTS.reset(requests_token)


def bind_round(round_no: int) -> None:
    """Name ``round_no`` on the lines that follow, up to the end of the open context."""
    _ROUND.set(round_no)


def json_logs() -> bool:
    """Whether ``LETHE_LOG_FORMAT`` asks for JSON (anything but text or json is an error)."""
    chosen = os.environ.get(LOG_FORMAT_ENV, "text").strip().lower() or "text"
    if chosen not in FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={chosen!r}: use one of {', '.join(FORMATS)}")
    return chosen == "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the context's round and request ids."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "role": self.role,
            "logger": record.name,
            "msg": record.getMessage(),
            "round": _ROUND.get(),
            "request_ids": list(_REQUESTS.get()),
            "pid": record.process,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(role: str, human: str) -> logging.Formatter:
    """The JSON formatter if ``LETHE_LOG_FORMAT=json``, else ``human``'s."""
    return JsonFormatter(role) if json_logs() else logging.Formatter(human)


def configure(role: str, human: str, *, stream: IO[str] | None = None) -> None:
    """``logging.basicConfig`` at INFO, in ``human``'s format or as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(role, human))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
