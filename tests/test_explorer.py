"""The explorer page, driven in headless Chromium: rounds, nodes, the forget timeline and the
audit's badges; nothing loaded from outside; everything from the chain escaped."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from werkzeug.serving import make_server

from coordinator.api import create_app
from coordinator.queue import CoordinatorDB
from launcher.devnet import Devnet
from protocol.commitments import RecordKey
from protocol.ledger import Ledger
from protocol.store import LocalStore
from protocol.typed_data import Domain
from tests.audit_history import FED_ID, Contribution, UnguardedLethe, copy_store, publish_round
from tests.browser import CHROMIUM_ARGS
from verifier.explorer import render_explorer

if TYPE_CHECKING:
    from tests.audit_fixtures import AuditedHistory

pytest_plugins = ["tests.chain_fixtures", "tests.audit_fixtures"]


@pytest.fixture
def explorer_url(audited_history: AuditedHistory, tmp_path: Path) -> Iterator[str]:
    """The coordinator API with its explorer, over real HTTP on loopback."""
    db = CoordinatorDB(tmp_path / "coordinator.sqlite")
    for round_no, accuracy in audited_history.history.accuracy.items():
        db.save_round(round_no, "finalized", {"accuracy": accuracy})
    ledger, store = audited_history.ledger, audited_history.store
    app = create_app(
        db,
        token="explorer-test-token-0123",
        record_key=RecordKey(FED_ID, bytes(32)),
        explorer=lambda: render_explorer(ledger, store, db),
    )
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_explorer_shows_rounds_nodes_and_forget_timeline_in_chromium(
    chromium: str, explorer_url: str, audited_history: AuditedHistory, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    ledger = audited_history.ledger
    history = audited_history.history
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            response = page.goto(f"{explorer_url}/explorer", wait_until="load")
            assert response is not None and response.status == 200
            assert page.title() == "Lethe explorer"
            assert "AUDIT PASSED: 4 rounds (3 finalized)" in page.inner_text(".verdict.ok")

            rounds = page.locator("tr.round")
            assert rounds.count() == 4
            statuses = [rounds.nth(i).get_attribute("data-status") for i in range(4)]
            assert statuses == ["verified", "verified", "verified", "pending"]
            assert [rounds.nth(i).locator(".badge").inner_text() for i in range(4)] == [
                "verified",
                "verified",
                "verified",
                "pending",
            ]
            first = history.rounds[0]
            row = page.locator('tr.round[data-round="1"]')
            proposal = next(e for e in ledger.events(["RoundProposed"]) if e.args["round"] == 1)
            assert row.locator(f'[title="{proposal.tx_hash}"]').count() == 1
            assert row.locator(f'[title="{first.model_cid}"]').count() == 1
            assert f"{ledger.receipt(proposal.tx_hash).gas_used:,}" in row.inner_text()
            assert f"{history.accuracy[1]:.1%}" in row.inner_text()
            assert "3 updates" in row.inner_text() and "3 of quorum 2" in row.inner_text()
            assert "1 of quorum 2" in page.locator('tr.round[data-round="4"]').inner_text()

            nodes = page.locator("tr.node")
            assert nodes.count() == 3
            for i, address in enumerate(history.addresses):
                text = nodes.nth(i).inner_text()
                assert address in text and "admitted" in text and "1, 2, 3, 4" in text
                assert nodes.nth(i).locator("td").nth(3).locator("code").count() == 1

            forget = page.locator("section.forget")
            assert forget.count() == 1 and forget.get_attribute("data-status") == "verified"
            timeline = forget.inner_text()
            assert "forget-001" in timeline and "verified" in timeline
            _, cid = history.certificates["forget-001"]
            assert forget.locator("code.cid").inner_text() == cid
            for name in ("ForgetRequested", "ForgetCertified", "ForgetCompleted"):
                (event,) = ledger.events([name])
                assert event.tx_hash in timeline
            assert "slice 2 of 4" in timeline and "slices 2–3" in timeline
            opened = forget.locator("li").first.inner_text()
            assert "owner node" in opened and history.addresses[1] in opened
            assert [s.inner_text().split("\n")[0] for s in forget.locator("li").all()] == [
                "Requested",
                "Certified",
                "Completed",
            ]

            page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
        finally:
            browser.close()
    assert requested and all(url.startswith(explorer_url) for url in requested), requested
    assert (tmp_path / "explorer.png").stat().st_size > 10_000


def test_failed_checks_get_failed_badges_from_the_audit(
    audited_history: AuditedHistory, tmp_path: Path
) -> None:
    store = copy_store(audited_history.store_dir, tmp_path / "blocks")
    _, cid = audited_history.history.certificates["forget-001"]
    (store.root / cid).write_bytes(b"not the certificate")

    html = render_explorer(audited_history.ledger, store)
    assert re.findall(r'<tr class="round" data-round="\d+" data-status="(\w+)"', html) == [
        "verified",
        "verified",
        "verified",
        "pending",
    ]
    assert re.findall(r'<section class="forget" [^>]*data-status="(\w+)"', html) == ["failed"]
    assert 'class="verdict bad"' in html and f"certificate {cid} cannot be fetched intact" in html


def test_chain_strings_are_escaped(devnet: Devnet, tmp_path: Path) -> None:
    chain = UnguardedLethe(devnet)
    store = LocalStore(tmp_path / "blocks")
    coordinator, node = devnet.accounts[1], devnet.accounts[2]
    vector = np.ones(12, dtype=np.float32)
    published = publish_round(
        store,
        1,
        [Contribution(node.address, node.private_key, vector, 1)],
        domain=Domain.of(chain.ledger),
    )
    chain.emit("coordinatorAdmitted", coordinator.address, "0x" + "00" * 20)
    chain.emit("nodeAdmitted", node.address, 1)
    hostile = '<script>alert("cid")</script>'
    chain.emit(
        "roundProposed",
        1,
        coordinator.address,
        published.model_hash,
        hostile,
        published.updates_root,
        published.manifest_cid,
        1,
        1,
    )

    html = render_explorer(chain.ledger, store)
    assert "<script" not in html
    assert "&lt;script&gt;alert(&quot;cid&quot;)&lt;/script&gt;" in html
    assert 'data-status="failed"' in html


def test_unreadable_chain_gives_a_page_that_says_so(tmp_path: Path) -> None:
    ledger = Ledger("http://127.0.0.1:9", "0x" + "11" * 20)
    html = render_explorer(ledger, LocalStore(tmp_path))
    assert "The history cannot be read" in html and "cannot reach" in html
