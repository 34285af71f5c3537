"""A long-lived ClientApp executor for a SuperNode started with ``--isolation process``.

Flower's default (``subprocess`` isolation) starts a fresh ``flwr-clientapp`` process per
message: ~1 s of interpreter start-up and imports, paid at every stage of every round.
In ``process`` isolation Flower leaves running the ClientApp to an outside process that
acquires tasks from the SuperNode's Runtime API; this is that process, kept warm. It
runs exactly the task protocol of ``flwr-clientapp`` (acquire → pull input → run the
ClientApp → push reply and task output), just without exiting in between.
"""

import functools
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.supercore.runtime import RuntimeHttpClient

logger = logging.getLogger("lethe.node.worker")

LETHE_APP = "lethe/lethe"
FAULT_ENV = "LETHE_FAULT_EXIT_AFTER"


@dataclass(frozen=True)
class WorkerConfig:
    """Where the SuperNode's Runtime API listens and how eagerly to poll it.

    A round's stages follow each other within a second, so right after a task the worker
    polls every ``poll_s``; after ``busy_window_s`` without one it relaxes to
    ``idle_poll_s`` to leave the CPU to others.
    """

    runtime_api_address: str
    poll_s: float = 0.02
    idle_poll_s: float = 0.2
    busy_window_s: float = 15.0
    object_backoff_s: float = 0.05
    allowed_apps: tuple[str, ...] = (LETHE_APP,)


def _make_client(address: str, token: str | None) -> "RuntimeHttpClient":
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors = [RuntimeTokenHttpInterceptor(token)] if token else []
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )


def _tune_object_pulls(backoff_s: float) -> None:
    """Retry object pulls sooner than Flower's default 1 s first back-off.

    A just-created task's objects may still be in flight to the SuperNode; waiting a
    whole second for them would dominate a message stage.
    """
    import flwr.supernode.runtime.run_clientapp as flwr_task

    pull = functools.partial(
        getattr(flwr_task, "pull_and_inflate_object_from_tree"),  # noqa: B009
        initial_backoff=backoff_s / 5,
        backoff_cap=backoff_s,
    )
    setattr(flwr_task, "pull_and_inflate_object_from_tree", pull)  # noqa: B010


_APPS: dict[str, object] = {}


def _load_app(fab: object, run: object) -> object:
    """Install a FAB once and load its ClientApp, as ``flwr-clientapp`` does, then cache it."""
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.utils import get_load_client_app_fn

    key = str(fab.hash_str)  # type: ignore[attr-defined]
    if key not in _APPS:
        install_from_fab(fab.content, skip_prompt=True)  # type: ignore[attr-defined]
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        _APPS[key] = load(run.fab_id, run.fab_version, key)  # type: ignore[attr-defined]
    return _APPS[key]


def run_task(config: WorkerConfig, token: str) -> tuple[bool, str]:
    """Execute one acquired task in this process; return (succeeded, message type)."""
    import flwr.supernode.runtime.run_clientapp as flwr_task
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http

    client = _make_client(config.runtime_api_address, token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    stage = ""
    status, details, ok = SubStatus.FAILED, "ClientApp task failed", False
    try:
        message, context, run, fab = flwr_task.pull_task_input(client)
        stage = message.metadata.message_type
        try:
            if run.fab_id not in config.allowed_apps:
                raise RuntimeError(f"this node runs only {', '.join(config.allowed_apps)}")
            app = _load_app(fab, run)
            reply = app(message=message, context=context)  # type: ignore[operator]
            status, details, ok = SubStatus.COMPLETED, "", True
        except Exception as exc:
            logger.exception("ClientApp raised")
            details = f"{type(exc).__name__}: {exc}"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                reply_to=message,
            )
        flwr_task.push_message(client, reply, context)
    finally:
        # Stop heartbeats first: pushing the task output retires the token, and a
        # heartbeat sent after that is refused (401), which Flower treats as fatal.
        heartbeat.stop()
        flwr_task.push_task_output(client, context, status, details)
        client.close()
    return ok, stage


def serve(config: WorkerConfig) -> None:
    """Acquire and run ClientApp tasks until SIGTERM/SIGINT."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    _tune_object_pulls(config.object_backoff_s)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    acquirer = _make_client(config.runtime_api_address, None)
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    last_task = 0.0
    while not stopping:
        try:
            res = acquirer.AcquireTask(request)
        except Exception as exc:  # the SuperNode may still be starting
            logger.debug("AcquireTask failed: %s", exc)
            time.sleep(0.5)
            continue
        if res.HasField("task") and res.token:
            started = time.perf_counter()
            ok, stage = run_task(config, res.token)
            elapsed = time.perf_counter() - started
            logger.info("%s %s in %.3f s", stage, "done" if ok else "FAILED", elapsed)
            _crash_if_asked(stage)
            last_task = time.monotonic()
        elif time.monotonic() - last_task < config.busy_window_s:
            time.sleep(config.poll_s)
        else:
            time.sleep(config.idle_poll_s)
    acquirer.close()


def _crash_if_asked(stage: str) -> None:
    """Fault injection for tests and drills: die like a killed machine after ``stage``.

    With ``LETHE_FAULT_EXIT_AFTER=<message type>`` the node answers that stage, waits for
    the SuperNode to forward the reply, then SIGKILLs its whole process group.
    """
    if stage and os.environ.get(FAULT_ENV) == stage:
        logger.warning("%s=%s: killing this node now", FAULT_ENV, stage)
        time.sleep(2.0)
        os.killpg(os.getpgid(0), signal.SIGKILL)
