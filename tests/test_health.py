"""`/health` tells the truth: it says `down`, with a 503 and the part's name, whenever the
federation cannot make progress — ServerApp gone or stopped, SuperLink failing, too few
nodes, chain down, store unreachable — and `ok` only when every part answers.

The chain is real anvil, the store a real local block store (and an unreachable Kubo
address), the queue real SQLite, the API real HTTP; the SuperLink's node list is a
function here (the ServerApp passes ``Grid.get_node_ids``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from flask import Flask

from coordinator.api import create_app
from coordinator.cli import main as lethe
from coordinator.health import STALE_AFTER_S, Heartbeat, probe, read_heartbeat
from coordinator.queue import CoordinatorDB
from launcher.devnet import Devnet
from protocol.store import open_store
from tests.api_server import FED, RECORD_KEY, TOKEN

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture(scope="module")
def chain() -> Iterator[Devnet]:
    with Devnet() as devnet:
        yield devnet


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def beat(db: CoordinatorDB, nodes: Callable[[], list[int]], clock: Clock) -> Heartbeat:
    heartbeat = Heartbeat(db, nodes, clock=clock)
    heartbeat.step("serving forget requests")
    heartbeat.beat()
    return heartbeat


def check(db: CoordinatorDB, chain_url: str, store_spec: str, clock: Clock) -> dict[str, object]:
    store = open_store(store_spec, timeout=1.0)
    return probe(db, rpc_url=chain_url, store=store, min_nodes=2, now=clock.now)


def test_every_part_up_is_ok(tmp_path: Path, db: CoordinatorDB, chain: Devnet) -> None:
    clock = Clock()
    beat(db, lambda: [7, 8, 9], clock)
    clock.now += 3
    report = check(db, chain.rpc_url, str(tmp_path / "blocks"), clock)
    assert report["status"] == "ok", report["problems"]
    assert report["connected_nodes"] == 3
    assert report["serverapp"] == {
        "ok": True,
        "last_heartbeat_s_ago": 3.0,
        "step": "serving forget requests",
        "step_for_s": 3.0,
    }
    assert isinstance(report["chain"], dict) and report["chain"]["head"] is not None


def test_no_heartbeat_means_the_serverapp_never_ran(
    tmp_path: Path, db: CoordinatorDB, chain: Devnet
) -> None:
    report = check(db, chain.rpc_url, str(tmp_path / "blocks"), Clock())
    assert report["status"] == "down"
    assert report["problems"] == ["serverapp: no heartbeat: the ServerApp never ran"]


def test_a_stale_heartbeat_means_the_serverapp_is_down(
    tmp_path: Path, db: CoordinatorDB, chain: Devnet
) -> None:
    clock = Clock()
    beat(db, lambda: [7, 8, 9], clock)
    clock.now += STALE_AFTER_S + 5
    report = check(db, chain.rpc_url, str(tmp_path / "blocks"), clock)
    assert report["status"] == "down"
    assert report["problems"] == ["serverapp: no heartbeat for 20 s: the ServerApp is down"]
    assert report["connected_nodes"] == 0, "a dead ServerApp's node list is not trusted"


def test_a_stopped_serverapp_is_down(tmp_path: Path, db: CoordinatorDB, chain: Devnet) -> None:
    clock = Clock()
    beat(db, lambda: [7, 8, 9], clock).stop()
    report = check(db, chain.rpc_url, str(tmp_path / "blocks"), clock)
    assert report["problems"] == ["serverapp: the ServerApp stopped"]


def test_a_failing_superlink_is_named(tmp_path: Path, db: CoordinatorDB, chain: Devnet) -> None:
    def unreachable() -> list[int]:
        raise ConnectionError("SuperLink at 127.0.0.1:9091 unavailable")

    clock = Clock()
    beat(db, unreachable, clock)
    report = check(db, chain.rpc_url, str(tmp_path / "blocks"), clock)
    assert report["status"] == "down"
    assert report["problems"] == [
        "superlink: ConnectionError: SuperLink at 127.0.0.1:9091 unavailable"
    ]


def test_too_few_nodes_for_a_round(tmp_path: Path, db: CoordinatorDB, chain: Devnet) -> None:
    clock = Clock()
    beat(db, lambda: [7], clock)
    db.save_node("0x" + "aa" * 20, {"flower_node_id": 7, "last_round": 4})
    db.save_node("0x" + "bb" * 20, {"flower_node_id": 8, "last_round": 3})
    report = check(db, chain.rpc_url, str(tmp_path / "blocks"), clock)
    assert report["problems"] == ["nodes: 1 connected, a round needs 2"]
    assert report["nodes"] == [
        {"address": "0x" + "aa" * 20, "flower_node_id": 7, "connected": True, "last_round": 4},
        {"address": "0x" + "bb" * 20, "flower_node_id": 8, "connected": False, "last_round": 3},
    ]


def test_chain_and_store_down_are_named(tmp_path: Path, db: CoordinatorDB) -> None:
    clock = Clock()
    beat(db, lambda: [7, 8], clock)
    with Devnet() as devnet:
        url = devnet.rpc_url
    report = check(db, url, "http://127.0.0.1:9", clock)  # nothing listens on port 9
    problems = report["problems"]
    assert isinstance(problems, list) and len(problems) == 2
    assert problems[0].startswith("chain: ConnectionError")
    assert problems[1].startswith("store: ")


def test_the_heartbeat_thread_keeps_beating(db: CoordinatorDB) -> None:
    heartbeat = Heartbeat(db, lambda: [1, 2], interval_s=0.05).start()
    try:
        first = read_heartbeat(db)
        assert first is not None
        later = first
        for _ in range(100):
            time.sleep(0.05)
            beat = read_heartbeat(db)
            assert beat is not None
            later = beat
            if later.at > first.at:
                break
        assert later.at > first.at and later.nodes == [1, 2]
    finally:
        heartbeat.stop()


def test_http_503_and_lethe_status_name_the_part_that_is_down(
    tmp_path: Path,
    db: CoordinatorDB,
    serve_app: Callable[[Flask], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    devnet = Devnet().start()
    try:
        store = open_store(str(tmp_path / "blocks"))
        health = functools.partial(probe, db, rpc_url=devnet.rpc_url, store=store, min_nodes=2)
        api = serve_app(create_app(db, token=TOKEN, record_key=RECORD_KEY, health=health))
        Heartbeat(db, lambda: [7, 8]).beat()
        up = requests.get(f"{api}/health", timeout=10)
        assert up.status_code == 200 and up.json()["status"] == "ok"
        devnet.stop()
        down = requests.get(f"{api}/health", timeout=10)
        assert down.status_code == 503
        assert down.json()["problems"][0].startswith("chain: ")
        monkeypatch.setenv("LETHE_API_URL", api)
        shown = CliRunner().invoke(lethe, ["status"])
        assert shown.exit_code == 0, shown.output
        assert f"federation {FED}: DOWN" in shown.output
        assert "  ! chain: " in shown.output
        assert "  chain      DOWN" in shown.output
        assert "  ServerApp  up" in shown.output
    finally:
        devnet.stop()


def test_a_request_waiting_for_its_owner_is_listed_not_a_fault(
    tmp_path: Path, db: CoordinatorDB, chain: Devnet
) -> None:
    clock = Clock()
    beat(db, lambda: [7, 8, 9], clock)
    db.submit_forget("rec-w", "0x" + "cd" * 32, "dsr-wait")
    db.advance_forget("dsr-wait", "received", "dispatched", node_address="0x" + "ab" * 20)
    reason = "waiting: owner 0x" + "ab" * 20 + " offline since 2026-12-02T22:00:00Z"
    assert db.set_reason("dsr-wait", "dispatched", reason)
    assert not db.set_reason("dsr-wait", "dispatched", reason), "unchanged: nothing to log"
    report = check(db, chain.rpc_url, str(tmp_path / "blocks"), clock)
    assert report["status"] == "ok", report["problems"]
    assert report["forgets_waiting"] == [
        {"request_id": "dsr-wait", "state": "dispatched", "reason": reason}
    ]
    assert db.get_forget("dsr-wait").history[-1]["reason"] == reason


def test_health_without_the_token_gives_counts_not_node_ids(
    tmp_path: Path,
    db: CoordinatorDB,
    chain: Devnet,
    serve_app: Callable[[Flask], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    holder, copier = "0x" + "ab" * 20, "0x" + "cd" * 20
    db.save_node(holder, {"flower_node_id": 4242424242, "last_round": 1})
    db.save_node(copier, {"flower_node_id": 5353535353, "last_round": 1})
    shared = "0x" + "ee" * 32
    db.replace_record_index(holder, [shared, "0x" + "01" * 32])
    db.replace_record_index(copier, [shared])
    store = open_store(str(tmp_path / "blocks"))
    health = functools.partial(probe, db, rpc_url=chain.rpc_url, store=store, min_nodes=2)
    api = serve_app(create_app(db, token=TOKEN, record_key=RECORD_KEY, health=health))
    Heartbeat(db, lambda: [4242424242, 5353535353]).beat()

    public = requests.get(f"{api}/health", timeout=10)
    text = public.text.lower()
    for secret in (holder, copier, "4242424242", "5353535353", shared):
        assert secret not in text, f"{secret} shown without the token"
    assert public.json()["known_nodes"] == 2
    assert public.json()["connected_nodes"] == 2
    assert public.json()["duplicate_records"] == 1

    auth = {"Authorization": f"Bearer {TOKEN}"}
    full = requests.get(f"{api}/health", headers=auth, timeout=10).json()
    assert {n["address"] for n in full["nodes"]} == {holder, copier}
    assert full["duplicate_records"] == [{"commitment": shared, "owners": [holder, copier]}]
    monkeypatch.setenv("LETHE_API_URL", api)
    monkeypatch.setenv("LETHE_API_TOKEN", TOKEN)
    shown = CliRunner().invoke(lethe, ["status"])
    assert shown.exit_code == 0, shown.output
    assert f"record {shared} announced by {holder}, {copier}" in shown.output
