"""A long-lived ClientApp executor for a SuperNode started with ``--isolation process``.

Flower's default (``subprocess`` isolation) starts a fresh ``flwr-clientapp`` process per
message: ~1 s of interpreter start-up and imports, paid at every stage of every round.
In ``process`` isolation Flower leaves running the ClientApp to an outside process that
acquires tasks from the SuperNode's Runtime API; this is that process, kept warm. The
task protocol itself (Flower internals) is in ``infra.flower``; this module decides how
eagerly to poll, and keeps serving when one task or one Runtime-API call fails.
"""

import logging
import signal
import time
from dataclasses import dataclass

from infra import flower

logger = logging.getLogger("lethe.node.worker")

LETHE_APP = "lethe/lethe"


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
    allowed_apps: tuple[str, ...] = (LETHE_APP,)


def run_task(config: WorkerConfig, token: str) -> tuple[bool, str]:
    """Execute one acquired task in this process; return (succeeded, message type)."""
    return flower.run_client_task(config.runtime_api_address, token, config.allowed_apps)


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
