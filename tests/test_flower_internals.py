"""The Flower internals in ``infra.flower``: present, really used, and guarded.

Specifications:
- every private module and attribute Lethe touches exists in the installed flwr;
- another flwr version than the pinned one is refused with an actionable message;
- the SuperNode's idle sleep is capped, and its loop really sleeps through the patched
  name; object pulls start sooner, and Flower really calls the patched pullers;
- the warm worker survives a Runtime-API error: it logs it and serves the next task;
- the SuperNode's heartbeat can be 3 s (a beat every ~1.2 s, not a busy loop), which only a
  SuperLink that allows it (``coordinator.superlink``) accepts.
"""

import importlib
import inspect
import itertools
import logging
import signal
import time
from typing import Any

import pytest

from infra import flower
from node import worker


def test_every_patched_target_exists() -> None:
    for module_name, names in flower.TARGETS.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert hasattr(module, name), f"{module_name}.{name} is gone"


def test_another_flower_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    flower.check_version()
    monkeypatch.setattr(flower, "version", lambda _name: "1.43.0")
    with pytest.raises(flower.FlowerVersionError, match=r"flwr==1\.42\.0.*1\.43\.0 is installed"):
        flower.cap_supernode_waits(0.1)


def test_supernode_idle_sleep_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = importlib.import_module(flower.SUPERNODE_LOOP)
    for name in flower.TARGETS[flower.SUPERNODE_LOOP]:
        monkeypatch.setattr(loop, name, getattr(loop, name))  # restored after the test
    source = inspect.getsource(loop)
    assert "time.sleep(3)" in source and "pull_objects(" in source
    flower.cap_supernode_waits(0.05)
    started = time.perf_counter()
    loop.time.sleep(3)
    assert time.perf_counter() - started < 0.5
    assert loop.time.monotonic() > 0  # the rest of the time module is untouched
    assert loop.pull_objects.keywords == {"initial_backoff": 0.005, "backoff_cap": 0.05}


@pytest.mark.parametrize(
    ("module_name", "tune", "caller"),
    [
        (flower.HTTP_GRID, flower.tune_grid_object_pulls, "pull_objects("),
        (
            flower.CLIENTAPP_TASK,
            flower.tune_task_object_pulls,
            "pull_and_inflate_object_from_tree(",
        ),
    ],
)
def test_object_pulls_start_sooner(
    monkeypatch: pytest.MonkeyPatch, module_name: str, tune: Any, caller: str
) -> None:
    module = importlib.import_module(module_name)
    name = caller.rstrip("(")
    original = getattr(module, name)
    monkeypatch.setattr(module, name, original)
    assert caller in inspect.getsource(module)
    tune(0.05)
    tune(0.05)  # twice: still one layer over Flower's function
    patched = getattr(module, name)
    assert patched.func is original
    assert patched.keywords == {"initial_backoff": 0.01, "backoff_cap": 0.05}


class _Client:
    def close(self) -> None:
        pass


def test_worker_survives_a_runtime_api_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def acquire(_client: object) -> str | None:
        if len(ran) == 2:
            signal.raise_signal(signal.SIGTERM)
            return None
        return f"token-{len(ran)}"

    def run_task(_config: worker.WorkerConfig, token: str) -> tuple[bool, str]:
        ran.append(token)
        if token == "token-0":
            raise ConnectionError("Runtime API went away")
        return True, "train"

    monkeypatch.setattr(flower, "runtime_client", lambda *_args: _Client())
    monkeypatch.setattr(flower, "tune_task_object_pulls", lambda _s: None)
    monkeypatch.setattr(flower, "acquire_task", acquire)
    monkeypatch.setattr(worker, "run_task", run_task)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with caplog.at_level(logging.INFO, logger="lethe.node.worker"):
            worker.serve(worker.WorkerConfig("127.0.0.1:1", retry_s=0.0))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert ran == ["token-0", "token-1"]
    assert "serving on" in caplog.text
    assert "train done" in caplog.text


def test_supernode_heartbeat_is_shortened(monkeypatch: pytest.MonkeyPatch) -> None:
    modules = [importlib.import_module(flower.FLEET_CONNECTION)]
    modules.append(importlib.import_module(flower.HEARTBEAT_SENDER))
    for module in modules:
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", module.HEARTBEAT_DEFAULT_INTERVAL)
        assert "HEARTBEAT_DEFAULT_INTERVAL" in inspect.getsource(module)
    monkeypatch.setattr(modules[1], "HEARTBEAT_CALL_TIMEOUT", modules[1].HEARTBEAT_CALL_TIMEOUT)
    flower.shorten_supernode_heartbeat()
    assert all(m.HEARTBEAT_DEFAULT_INTERVAL == 10.0 for m in modules)
    assert modules[1].HEARTBEAT_CALL_TIMEOUT == 5  # Flower's own at the default


def test_a_short_heartbeat_really_beats_about_every_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender = importlib.import_module(flower.HEARTBEAT_SENDER)
    for name in flower.TARGETS[flower.HEARTBEAT_SENDER]:
        monkeypatch.setattr(sender, name, getattr(sender, name))
    monkeypatch.setattr(
        importlib.import_module(flower.FLEET_CONNECTION), "HEARTBEAT_DEFAULT_INTERVAL", 10.0
    )
    flower.shorten_supernode_heartbeat(flower.SHORT_HEARTBEAT_S)
    beats: list[float] = []

    def beat() -> bool:
        beats.append(time.monotonic())
        return True

    heartbeat = sender.HeartbeatSender(beat)
    heartbeat.start()
    time.sleep(2.9)
    heartbeat.stop()
    # (3 s − 1.5 s) × 0.7..0.9 between beats; unpatched, (3 − 5) < 0: a busy loop.
    assert 3 <= len(beats) <= 4
    assert all(0.95 <= b - a <= 1.5 for a, b in itertools.pairwise(beats))


def test_superlink_accepts_short_heartbeats_only_when_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = importlib.import_module(flower.SUPERLINK_FLEET)
    monkeypatch.setattr(fleet, "HEARTBEAT_MIN_INTERVAL", fleet.HEARTBEAT_MIN_INTERVAL)
    assert "HEARTBEAT_MIN_INTERVAL <= interval" in inspect.getsource(
        fleet._validate_heartbeat_interval
    )
    with pytest.raises(Exception, match="out of bounds"):
        fleet._validate_heartbeat_interval(flower.SHORT_HEARTBEAT_S)
    flower.allow_short_heartbeats()
    fleet._validate_heartbeat_interval(flower.SHORT_HEARTBEAT_S)
    fleet._validate_heartbeat_interval(flower.MIN_HEARTBEAT_S)
    with pytest.raises(Exception, match="out of bounds"):
        fleet._validate_heartbeat_interval(0.5)
