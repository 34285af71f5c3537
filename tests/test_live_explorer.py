"""The explorer as the API serves it: the audit replays only new blocks, the page is
cached between chain heads, and the head is asked for at most once per interval."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests

from coordinator.server import ACCESS_LOG
from protocol.errors import LedgerError
from protocol.store import LocalStore
from tests.api_server import FED, TOKEN
from verifier.explorer import LiveExplorer

pytest_plugins = ["tests.api_fixtures"]


class FakeLedger:
    """A chain with no Lethe events whose head the test moves; it counts every read."""

    address = "0x" + "ab" * 20
    chain_id = 31337
    deployment_block = 5

    def __init__(self) -> None:
        self.head = 9
        self.heads = 0
        self.ranges: list[tuple[int, int]] = []
        self.down = False

    def block_number(self) -> int:
        if self.down:
            raise LedgerError("http://127.0.0.1:9 does not answer")
        self.heads += 1
        return self.head

    def events(self, *, from_block: int, to_block: int) -> list[Any]:
        self.ranges.append((from_block, to_block))
        return []


def test_only_new_blocks_are_replayed_and_pages_are_cached(tmp_path: Any) -> None:
    ledger = FakeLedger()
    now = [0.0]
    page = LiveExplorer(ledger, LocalStore(tmp_path), min_interval=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    first = page()
    assert "AUDIT PASSED" in first and ledger.ranges == [(5, 9)]
    assert page() is first and ledger.heads == 1  # within the interval: no RPC at all
    now[0] += 2
    assert page() is first and ledger.ranges == [(5, 9)]  # head unchanged: no replay
    ledger.head = 12
    now[0] += 2
    assert "blocks 5–12" in page() and ledger.ranges == [(5, 9), (10, 12)]


def test_an_unreadable_chain_gives_a_page_that_says_so_and_recovers(tmp_path: Any) -> None:
    ledger = FakeLedger()
    now = [0.0]
    page = LiveExplorer(ledger, LocalStore(tmp_path), clock=lambda: now[0])  # type: ignore[arg-type]
    ledger.down = True
    assert "cannot be read" in page()
    ledger.down = False
    now[0] += 2
    assert "AUDIT PASSED" in page()


def test_every_request_is_logged_without_headers_or_body(
    api: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOG):
        requests.post(
            f"{api}/forget",
            json={"record_id": "rec-1"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        requests.get(f"{api}/forget/x%0Ay", timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOG]
    assert any('"POST /forget" 202' in line for line in lines)
    assert any('"GET /forget/x\\ny" 400' in line for line in lines)
    assert not any(TOKEN in line or "rec-1" in line or FED in line for line in lines)

