"""A long-lived ClientApp executor for a SuperNode started with ``--isolation process``.

Flower's default (``subprocess`` isolation) starts a fresh ``flwr-clientapp`` process per
message: ~1 s of interpreter start-up and imports, paid at every stage of every round.
In ``process`` isolation Flower leaves running the ClientApp to an outside process that
acquires tasks from the SuperNode's Runtime API; this is that process, kept warm. The
task protocol itself (Flower internals) is in ``infra.flower``; this module decides which
ClientApp answers, how eagerly to poll, and keeps serving when one task or one
Runtime-API call fails.

Only the node's own code runs here. A run's FAB is written by whoever submits it, and
its app id (``publisher/name``) is a string in that submitter's ``pyproject.toml``: a
foreign app calling itself ``lethe/lethe`` would otherwise execute inside the process
that holds the node's keys. So the FAB is never installed: the app id only selects
one of the ClientApps installed on the node (Lethe's own, plus any the operator named
with ``lethe-node run --allow-app``), and any other id is refused.
"""

import importlib
import logging
import signal
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import flower

logger = logging.getLogger("lethe.node.worker")

LETHE_APP = "lethe/lethe"
OWN_APP = "node.client_app:app"
"""Lethe's ClientApp, as installed with this node (never the one in a submitted FAB)."""


class AppSpecError(ValueError):
    """An ``--allow-app`` entry that does not name an installed app."""


def parse_app(spec: str) -> tuple[str, str]:
    """``PUBLISHER/NAME=DIR`` → (app id, the app project's directory on this node)."""
    app_id, sep, where = spec.partition("=")
    if not sep or app_id.count("/") != 1 or not where:
        raise AppSpecError(f"expected PUBLISHER/NAME=DIR (an installed app project), got {spec!r}")
    if not (Path(where) / "pyproject.toml").is_file():
        raise AppSpecError(f"{where} is not a Flower app project (no pyproject.toml)")
    return app_id, str(Path(where).resolve())


def load_app(where: str) -> Any:
    """The ClientApp named by ``module:attr``, or by a local app project's ``pyproject.toml``."""
    if Path(where).is_dir():
        project = tomllib.loads((Path(where) / "pyproject.toml").read_text())
        ref = str(project["tool"]["flwr"]["app"]["components"]["clientapp"])
        if where not in sys.path:
            sys.path.insert(0, where)
    else:
        ref = where
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class WorkerConfig:
    """Where the SuperNode's Runtime API listens and how eagerly to poll it.

    A round's stages follow each other within a second, so right after a task the worker
    polls every ``poll_s``; after ``busy_window_s`` without one it relaxes to
    ``idle_poll_s`` to leave the CPU to others. After a Runtime-API error it waits
    ``retry_s`` before asking again.
    """

    runtime_api_address: str
    poll_s: float = 0.02
    idle_poll_s: float = 0.2
    busy_window_s: float = 15.0
    object_backoff_s: float = 0.05
    retry_s: float = 0.5
    extra_apps: tuple[tuple[str, str], ...] = ()
    """(app id, installed app project directory) pairs the operator allowed besides Lethe."""
    _loaded: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def app_for(self, app_id: str) -> Any | None:
        """The installed ClientApp that answers runs of ``app_id``; None for any other id."""
        where = dict(self.extra_apps).get(app_id, OWN_APP if app_id == LETHE_APP else None)
        if where is None:
            return None
        if where not in self._loaded:
            self._loaded[where] = load_app(where)
        return self._loaded[where]


def run_task(config: WorkerConfig, token: str) -> tuple[bool, str]:
    """Execute one acquired task in this process; return (succeeded, message type)."""
    return flower.run_client_task(config.runtime_api_address, token, config.app_for)


def serve(config: WorkerConfig) -> None:
    """Acquire and run ClientApp tasks until SIGTERM/SIGINT; survive Runtime-API errors."""
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    flower.tune_task_object_pulls(config.object_backoff_s)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    acquirer = flower.runtime_client(config.runtime_api_address, None)
    last_task = 0.0
    failures = 0
    while not stopping:
        try:
            token = flower.acquire_task(acquirer)
        except Exception as exc:  # the SuperNode may still be starting
            logger.debug("AcquireTask failed: %s", exc)
            time.sleep(config.retry_s)
            continue
        if token:
            started = time.perf_counter()
            try:
                ok, stage = run_task(config, token)
            except Exception:
                # The task's reply is lost (the coordinator counts a dropout), not the node.
                failures += 1
                logger.exception("task failed in the Runtime API (%d so far); serving on", failures)
                time.sleep(config.retry_s)
                continue
            elapsed = time.perf_counter() - started
            logger.info("%s %s in %.3f s", stage, "done" if ok else "FAILED", elapsed)
            last_task = time.monotonic()
        elif time.monotonic() - last_task < config.busy_window_s:
            time.sleep(config.poll_s)
        else:
            time.sleep(config.idle_poll_s)
    acquirer.close()
