"""Every Flower internal Lethe relies on, in one guarded place.

Flower's public API (1.42, as 1.41) paces a loopback federation by sleeps (the SuperNode idles 3 s
between pulls, objects are pulled with a 1 s first back-off) and runs a ClientApp in a
fresh process per message. Lethe shortens those waits and keeps one ClientApp process
warm, which needs Flower's private modules. They are touched only here, each named in
``TARGETS``; every entry point calls :func:`check_version` first, so another flwr than
the pinned one is refused with a clear message instead of the patches silently doing
nothing. ``tests/test_flower_internals.py`` checks each target exists and is called.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
import types
from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr.supercore.runtime import RuntimeHttpClient

logger = logging.getLogger("lethe.flower")

PINNED = "1.42.0"
"""The flwr version whose internals this module was written against (as pyproject pins)."""

SUPERNODE_LOOP = "flwr.supernode.start_client_internal"
CLIENTAPP_TASK = "flwr.supernode.runtime.run_clientapp"
HTTP_GRID = "flwr.superlink.grid.http_grid"
FLEET_CONNECTION = "flwr.supernode.fleet_http_connection"
HEARTBEAT_SENDER = "flwr.supercore.heartbeat"
SUPERLINK_FLEET = "flwr.superlink.servicer.fleet.fleet_handlers"

TARGETS: dict[str, tuple[str, ...]] = {
    SUPERNODE_LOOP: ("time", "pull_objects"),
    CLIENTAPP_TASK: (
        "pull_and_inflate_object_from_tree",
        "pull_task_input",
        "push_message",
        "push_task_output",
    ),
    HTTP_GRID: ("pull_objects",),
    FLEET_CONNECTION: ("HEARTBEAT_DEFAULT_INTERVAL",),
    HEARTBEAT_SENDER: ("HEARTBEAT_DEFAULT_INTERVAL", "HEARTBEAT_CALL_TIMEOUT"),
    SUPERLINK_FLEET: ("HEARTBEAT_MIN_INTERVAL", "_validate_heartbeat_interval"),
}
"""Private module → the attributes Lethe reads or replaces in it."""


class FlowerVersionError(RuntimeError):
    """The installed flwr is not the version whose internals Lethe was written against."""


def check_version() -> None:
    """Refuse to start on any flwr but :data:`PINNED`."""
    found = version("flwr")
    if found != PINNED:
        raise FlowerVersionError(
            f"Lethe needs flwr=={PINNED} (it relies on internals listed in infra/flower.py), "
            f"but flwr {found} is installed: run `make setup` or pip install flwr=={PINNED}"
        )


def _module(name: str) -> types.ModuleType:
    check_version()
    return importlib.import_module(name)


def _pull_sooner(module_name: str, function: str, *, initial_s: float, cap_s: float) -> None:
    """Make ``module.function`` (an object puller) retry after ``initial_s``, at most ``cap_s``."""
    module = _module(module_name)
    pull = getattr(module, function)
    while isinstance(pull, functools.partial):  # patched before: patch the original
        pull = pull.func
    setattr(module, function, functools.partial(pull, initial_backoff=initial_s, backoff_cap=cap_s))


def cap_supernode_waits(poll_s: float) -> None:
    """Cap the SuperNode loop's sleeps at ``poll_s`` and pull its objects without back-off.

    A private copy of the ``time`` namespace is swapped into the loop's module, so only
    the SuperNode loop sleeps less.
    """
    loop = _module(SUPERNODE_LOOP)
    real_sleep = time.sleep
    names = {k: getattr(time, k) for k in dir(time) if not k.startswith("__")}
    shim = types.SimpleNamespace(**names)
    shim.sleep = lambda seconds: real_sleep(min(seconds, poll_s))
    setattr(loop, "time", shim)  # noqa: B010
    _pull_sooner(SUPERNODE_LOOP, "pull_objects", initial_s=poll_s / 10, cap_s=poll_s)


SUPERNODE_HEARTBEAT_S = 10.0
"""The SuperNode's default heartbeat interval: the shortest a stock SuperLink accepts
(Flower's default is 30 s)."""

MIN_HEARTBEAT_S = 1.0
"""The shortest heartbeat a SuperLink patched by :func:`allow_short_heartbeats` accepts."""

SHORT_HEARTBEAT_S = 3.0
"""The heartbeat of a local federation, whose SuperLink allows it: a killed node is counted
offline within 6 s, and a node or SuperLink stalled for up to ~4.8 s is not. Shorter beats
dropped live nodes of a 10-node federation on a 2-core machine at load 20–40 (1 s and
1.5 s both did; docs/rounds.md "Stragglers")."""


def shorten_supernode_heartbeat(interval_s: float = SUPERNODE_HEARTBEAT_S) -> None:
    """Declare and send the SuperNode's heartbeats every ``interval_s`` instead of 30 s.

    The SuperLink counts a node offline ``2 × interval`` after its last heartbeat and only
    then answers the node's pending messages with an error, so a killed node held a
    round stage for 55–64 s; with 10 s it is noticed within 20 s, with 3 s within 6 s.
    Flower's sender waits ``(interval − call timeout) × ~0.8`` between beats, so below
    10 s the call timeout it subtracts is cut to half the interval (a beat every ~1.2 s
    at 3 s: four missed beats in a row are tolerated before the node counts offline).
    """
    for name in (FLEET_CONNECTION, HEARTBEAT_SENDER):
        setattr(_module(name), "HEARTBEAT_DEFAULT_INTERVAL", interval_s)  # noqa: B010
    sender = _module(HEARTBEAT_SENDER)
    call_timeout = min(float(sender.HEARTBEAT_CALL_TIMEOUT), interval_s / 2)
    setattr(sender, "HEARTBEAT_CALL_TIMEOUT", call_timeout)  # noqa: B010


def allow_short_heartbeats(minimum_s: float = MIN_HEARTBEAT_S) -> None:
    """Let this process's SuperLink accept heartbeat intervals from ``minimum_s`` (Flower
    refuses anything under 10 s when a SuperNode registers and at every heartbeat)."""
    setattr(_module(SUPERLINK_FLEET), "HEARTBEAT_MIN_INTERVAL", minimum_s)  # noqa: B010


def tune_grid_object_pulls(backoff_s: float) -> None:
    """The ServerApp's Grid: retry reply-object pulls sooner than the 1 s first back-off."""
    _pull_sooner(HTTP_GRID, "pull_objects", initial_s=backoff_s / 5, cap_s=backoff_s)


def tune_task_object_pulls(backoff_s: float) -> None:
    """The ClientApp task: a just-created task's objects may still be in flight; retry soon."""
    _pull_sooner(
        CLIENTAPP_TASK,
        "pull_and_inflate_object_from_tree",
        initial_s=backoff_s / 5,
        cap_s=backoff_s,
    )


def runtime_client(address: str, token: str | None) -> RuntimeHttpClient:
    """A client of a SuperNode's Runtime API (what ``flwr-clientapp`` connects with)."""
    check_version()
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


def acquire_task(client: RuntimeHttpClient) -> str | None:
    """Ask the Runtime API for a ClientApp task; its token, or None when there is none."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
    return str(res.token) if res.HasField("task") and res.token else None


def run_client_task(
    address: str, token: str, app_for: Callable[[str], Any | None]
) -> tuple[bool, str]:
    """Execute one acquired ClientApp task in this process; return (succeeded, message type).

    The task protocol of ``flwr-clientapp`` (pull input → run the ClientApp → push the
    reply and the task output), without exiting afterwards, and with one deliberate
    difference: the run's FAB is never installed or imported. ``app_for(fab_id)`` names
    the node's own ClientApp for that app id (None: refused), so whoever submits a run
    chooses which installed app answers, never what code runs. The ClientApp raising
    becomes an error reply; a Runtime-API failure propagates to the caller.
    """
    task = _module(CLIENTAPP_TASK)
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http

    client = runtime_client(address, token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    stage = ""
    status, details, ok = SubStatus.FAILED, "ClientApp task failed", False
    try:
        message, context, run, _fab = task.pull_task_input(client)  # the FAB stays unopened
        stage = message.metadata.message_type
        try:
            app = app_for(str(run.fab_id))
            if app is None:
                raise RuntimeError(f"this node runs no app {run.fab_id!r}")
            reply = app(message=message, context=context)
            status, details, ok = SubStatus.COMPLETED, "", True
        except Exception as exc:
            logger.exception("ClientApp raised")
            details = f"{type(exc).__name__}: {exc}"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                reply_to=message,
            )
        task.push_message(client, reply, context)
    finally:
        # Stop heartbeats first: pushing the task output retires the token, and a
        # heartbeat sent after that is refused (401), which Flower treats as fatal.
        heartbeat.stop()
        try:
            task.push_task_output(client, context, status, details)
        finally:
            client.close()
    return ok, stage
