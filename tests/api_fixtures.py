"""The coordinator API served as `lethe api` serves it (waitress) on 127.0.0.1, over a
fresh queue that knows two records, ``rec-1`` and ``rec-2``.

Load with ``pytest_plugins = ["tests.api_fixtures"]``; import constants and helpers from
``tests.api_server``, never from here (pytest must register the plugin first).
"""

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from flask import Flask

from coordinator.api import create_app
from coordinator.queue import CoordinatorDB
from tests.api_server import NODE, RECORD_KEY, RECORDS, TOKEN, commitment, serve


@pytest.fixture
def db(tmp_path: Path) -> CoordinatorDB:
    db = CoordinatorDB(tmp_path / "coordinator.sqlite")
    db.replace_record_index(NODE, [commitment(r) for r in RECORDS])
    return db


@pytest.fixture
def serve_app() -> Iterator[Callable[[Flask], str]]:
    """Start any number of apps; every server is closed after the test."""
    running: list[Generator[str, None, None]] = []

    def start(app: Flask) -> str:
        server = serve(app)
        running.append(server)
        return next(server)

    yield start
    for server in running:
        server.close()


@pytest.fixture
def api(db: CoordinatorDB, serve_app: Callable[[Flask], str]) -> str:
    """The API without a rate limit, as schemathesis and the hostile tests need it."""
    return serve_app(create_app(db, token=TOKEN, record_key=RECORD_KEY))
