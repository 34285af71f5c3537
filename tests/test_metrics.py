"""`GET /metrics`: Prometheus text that prometheus-client's own parser reads, with every
series the operators need, read from the coordinator's durable state at scrape time."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from coordinator.api import create_app
from coordinator.health import Heartbeat, probe
from coordinator.metrics import STAGES, count_round, unproposed_rounds
from coordinator.queue import CoordinatorDB
from coordinator.rounds import RoundFailed, RoundFutile
from launcher.devnet import Devnet
from protocol.store import open_store
from tests.api_server import RECORD_KEY, RECORDS, TOKEN

pytest_plugins = ["tests.api_fixtures"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(api: str) -> tuple[str, Samples]:
    """GET /metrics, parsed by prometheus-client: (text, {(name, labels): value})."""
    reply = requests.get(f"{api}/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return reply.text, samples


def _round(db: CoordinatorDB, number: int, state: str, stages: dict[str, float]) -> None:
    db.save_round(number, state, {"seconds": sum(stages.values()), "stage_seconds": stages})


def test_every_series_is_there_with_its_value(
    tmp_path: Path, db: CoordinatorDB, serve_app: Callable[[Flask], str]
) -> None:
    with Devnet() as devnet:
        store = open_store(str(tmp_path / "blocks"))
        health = functools.partial(probe, db, rpc_url=devnet.rpc_url, store=store, min_nodes=2)
        api = serve_app(create_app(db, token=TOKEN, record_key=RECORD_KEY, health=health))
        Heartbeat(db, lambda: [7, 8, 9]).beat()
        stages = {"train": 0.4, "share": 0.08, "aggregate": 1.5, "publish": 0.2, "approve": 7.0}
        _round(db, 1, "finalized", stages)
        _round(db, 2, "finalized", {**stages, "train": 40.0})
        _round(db, 3, "proposed", stages)
        for exc in (RoundFailed("too few"), RoundFutile("no owner"), RoundFutile("no owner")):
            with pytest.raises(RoundFailed), count_round(db, RoundFailed, RoundFutile):
                raise exc
        for number, record in enumerate(RECORDS, start=1):
            db.submit_forget(record, RECORD_KEY.commitment_hex(record), f"req-{number}")
        db.advance_forget("req-1", "received", "dispatched")

        text, samples = scrape(api)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("lethe_rounds_total", outcome="finalized") == 2
    assert value("lethe_rounds_total", outcome="proposed") == 1
    assert value("lethe_rounds_total", outcome="failed") == 1
    assert value("lethe_rounds_total", outcome="futile") == 2
    assert value("lethe_last_finalized_round") == 2
    for stage in STAGES:
        assert value("lethe_round_stage_seconds_count", stage=stage) == 3
    assert value("lethe_round_stage_seconds_sum", stage="train") == pytest.approx(40.8)
    assert value("lethe_round_stage_seconds_bucket", stage="train", le="0.5") == 2
    assert value("lethe_round_stage_seconds_bucket", stage="train", le="30.0") == 2
    assert value("lethe_round_stage_seconds_bucket", stage="train", le="60.0") == 3
    assert value("lethe_round_stage_seconds_bucket", stage="approve", le="5.0") == 0
    assert value("lethe_round_stage_seconds_bucket", stage="approve", le="+Inf") == 3
    assert value("lethe_forget_requests", state="received") == 1
    assert value("lethe_forget_requests", state="dispatched") == 1
    assert value("lethe_forget_requests", state="completed") == 0
    assert 0 <= value("lethe_forget_oldest_age_seconds", state="received") < 60
    assert value("lethe_forget_oldest_age_seconds", state="certified") == 0
    assert value("lethe_connected_nodes") == 3
    assert value("lethe_up", part="chain") == 1
    assert value("lethe_up", part="store") == 1
    assert value("lethe_up", part="serverapp") == 1
    assert value("lethe_chain_head_block") >= 0
    # public like /forget: counts only, never whose record is being forgotten
    assert not any(record in text for record in RECORDS)


def test_a_part_down_reads_0(
    tmp_path: Path, db: CoordinatorDB, serve_app: Callable[[Flask], str]
) -> None:
    devnet = Devnet().start()
    try:
        store = open_store(str(tmp_path / "blocks"))
        health = functools.partial(probe, db, rpc_url=devnet.rpc_url, store=store, min_nodes=2)
        api = serve_app(create_app(db, token=TOKEN, record_key=RECORD_KEY, health=health))
        Heartbeat(db, lambda: [7]).beat()
        devnet.stop()
        _, samples = scrape(api)
    finally:
        devnet.stop()
    assert samples[("lethe_up", (("part", "chain"),))] == 0
    assert samples[("lethe_up", (("part", "serverapp"),))] == 1
    assert ("lethe_chain_head_block", ()) not in samples
    assert samples[("lethe_rounds_total", (("outcome", "finalized"),))] == 0


def test_only_rounds_that_end_before_a_proposal_are_counted_there(db: CoordinatorDB) -> None:
    with count_round(db, RoundFailed, RoundFutile):
        pass  # a proposed round: counted from its row in the rounds table
    with pytest.raises(ValueError), count_round(db, RoundFailed, RoundFutile):
        raise ValueError("a bug is not a round outcome")
    assert unproposed_rounds(db) == {}
    db.set_control("metrics.unproposed_rounds", "not json")
    assert unproposed_rounds(db) == {}
