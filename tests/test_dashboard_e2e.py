"""The feedback dashboard end to end in headless Chromium, on a real federation on 127.0.0.1.

Specification: three nodes hold a bank's customer feedback (each ingested its share of the
bank's cp1252 export with `lethe-node ingest --id-col … --encoding cp1252`) beside their
default data; in `/dashboard` the bank's whole file is uploaded, its columns chosen, and
every row is scored by the federation's global model and shows its probabilities and the
round that decided it; every row the model forgets (P(negative ∪ neutral) ≥ τ) is
forgotten by the node that held it, and the live log shows each reach ``completed`` with
its certificate CID and a verified badge. Rows the model is unsure of are marked review;
a person types a name and clicks "forget" on one and "keep" on another: the first follows
the same path to a verified certificate, signed off with that name. The nodes no longer
hold the forgotten records, and still hold the kept and unreviewed ones. The test saves a
screenshot.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.federation import FederationSpec, LocalFederation
from node.sisa import SisaNode
from tests.bank_feedback import bank_rows, write_bank_csv
from tests.browser import CHROMIUM_ARGS

pytestmark = pytest.mark.slow

SPEC = FederationSpec(
    nodes=3, slices=2, records_per_node=200, test_records=40, federation_id="lethe-feedback"
)
BIN = Path(sys.executable).parent
ROWS = 100


def _ingest_bank_share(fed: LocalFederation, tmp: Path, rows: list[dict[str, str]]) -> None:
    """Each node ingests its own customers' rows through the real command line."""
    for i, node in enumerate(fed.nodes):
        part = write_bank_csv(
            tmp / f"bank-part-{i + 1}.csv", rows[i :: len(fed.nodes)], encoding="cp1252"
        )
        subprocess.run(
            [
                str(BIN / "lethe-node"),
                "ingest",
                "--db",
                node.config.db,
                "--csv",
                str(part),
                "--federation",
                SPEC.federation_id,
                "--id-col",
                "account_number",
                "--text-col",
                "feedback_text",
                "--label-col",
                "ground_truth",
                "--encoding",
                "cp1252",
                "--no-progress",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )


def _held(fed: LocalFederation) -> set[str]:
    held: set[str] = set()
    for node in fed.nodes:
        with SisaNode.open(node.config.db, recover=False) as opened:
            held.update(opened.store.record_ids())
    return held


def test_bank_feedback_flows_from_upload_to_certificates_in_chromium(
    chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    rows = bank_rows(ROWS)
    upload = write_bank_csv(tmp_path / "bank-feedback.csv", rows, encoding="cp1252")
    fed = LocalFederation(tmp_path / "fed", SPEC, report=lambda _line: None)
    try:
        fed.prepare()
        _ingest_bank_share(fed, tmp_path, rows)
        fed.start()
        fed.wait_rounds(SPEC.slices, timeout=600)
        ids = {r["account_number"] for r in rows}
        assert ids <= _held(fed)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                external = []
                page.on(
                    "request",
                    lambda r: external.append(r.url) if not r.url.startswith(fed.api_url) else None,
                )
                response = page.goto(f"{fed.api_url}/dashboard", wait_until="load")
                assert response is not None and response.status == 200
                page.fill("#token", fed.api_token())
                page.select_option("#encoding", "windows-1252")
                page.set_input_files("#file", str(upload))
                page.wait_for_selector("#columns:not([hidden])")
                assert page.inner_text("#rows-found") == f"{ROWS} rows"
                page.select_option("#id-col", label="account_number")
                page.select_option("#text-col", label="feedback_text")
                page.click("#start")

                # Predicates as functions: the page's CSP forbids eval of expression strings.
                scored = "document.querySelectorAll('tr.row td.decision:not(:empty)').length"
                page.wait_for_function(
                    f"() => {scored} === {ROWS}",
                    timeout=300_000,
                )
                assert page.locator("td.error").count() == 0
                model_forgets = page.locator("tr.row[data-decision=forget]").count()
                model_keeps = page.locator("tr.row[data-decision=keep]").count()
                reviews = page.locator("tr.row[data-decision=review]").count()
                assert model_forgets + model_keeps + reviews == ROWS and model_forgets >= 1
                assert reviews >= 2, "the model was sure of every row: no review to click"
                first = page.locator("tr.row").first
                assert "neg " in first.locator("td.probs").inner_text()
                assert first.locator("td.model").inner_text().startswith("model · round ")
                assert page.inner_text("#sum-review").startswith(f"{reviews} (")

                # One click each, signed with a name: the person reads the text and forgets a
                # review row the bank itself calls negative or neutral, keeps a positive one.
                truth = {r["account_number"]: r["ground_truth"].casefold() for r in rows}
                pending = page.locator("tr.row[data-decision=review] td.record").all_inner_texts()
                to_forget = next(r for r in pending if truth[r] in ("negative", "neutral"))
                to_keep = next(r for r in pending if truth[r] == "positive")
                page.fill("#decider", "Ana Lima")
                for record, choice in ((to_forget, "forget"), (to_keep, "keep")):
                    row = page.locator("tr.row", has=page.locator("td.record", has_text=record))
                    row.locator(f"button.decide-{choice}").click()
                page.wait_for_function(
                    "() => document.getElementById('sum-human').textContent === '2'",
                    timeout=30_000,
                )
                forgets = page.locator("tr.row[data-decision=forget]").count()
                keeps = page.locator("tr.row[data-decision=keep]").count()
                assert (forgets, keeps) == (model_forgets + 1, model_keeps + 1)
                for record in (to_forget, to_keep):
                    row = page.locator("tr.row", has=page.locator("td.record", has_text=record))
                    assert row.locator("td.model").inner_text() == "Ana Lima"
                started = time.monotonic()
                page.wait_for_function(
                    "() => [...document.querySelectorAll('tr.row[data-decision=forget]')].every("
                    "r => r.dataset.state === 'completed' && r.querySelector('.badge.ok'))",
                    timeout=900_000,
                )
                waited = time.monotonic() - started
                certificates = page.locator("tr.row[data-decision=forget] .cert").all_inner_texts()
                assert len(certificates) == forgets
                assert all(c.startswith("bafk") for c in certificates)
                assert page.locator(".badge.bad").count() == 0
                assert "€" in page.inner_text("#log")  # the cp1252 bytes were decoded as such
                status = page.inner_text("#status")
                assert f"{ROWS} / {ROWS} rows scored · {forgets} / {forgets} forgets" in status
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

                decided = {
                    page.locator("tr.row").nth(i).locator("td.record").inner_text(): (
                        page.locator("tr.row").nth(i).get_attribute("data-decision")
                    )
                    for i in range(ROWS)
                }
                labels = page.locator("td.sentiment").all_inner_texts()
            finally:
                browser.close()
        assert external == []
        held = _held(fed)
        assert {r for r, d in decided.items() if d == "forget"}.isdisjoint(held)
        assert {r for r, d in decided.items() if d in ("keep", "review")} <= held
        assert to_forget not in held and to_keep in held
        agree = sum(
            label.split()[0] == row["ground_truth"].casefold()
            for label, row in zip(labels, rows, strict=True)
        )
        print(
            f"model: {model_forgets} forgotten, {model_keeps} kept, {reviews} to review; "
            f"forgets completed {waited:.0f} s after scoring; "
            f"the global model agrees with the bank's own labels on {agree}/{ROWS} rows"
        )
    finally:
        fed.stop()
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000
