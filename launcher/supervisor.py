"""`lethe up`'s supervisor: restart a crashed part of the local federation, within a limit.

Every ``check()`` (the `lethe up` loop calls it twice a second) looks at each part:

- a child process (SuperLink, a node, the API) that exited without being asked to is
  started again with its first command line;
- the dev chain, if anvil died, is started again on the same port from its last snapshot;
- the ServerApp, if its heartbeat went stale or it stopped without a stop request, is
  submitted again (``flwr run``) — also after the SuperLink restarted, since the SuperLink
  runs it.

Each restart prints one line. A part restarted ``max_restarts`` times within
``window_s`` is left down with a line saying so (a crash loop needs a human, and its log).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from coordinator.health import STALE_AFTER_S, read_heartbeat
from launcher.processes import Child, ProcessError, tail
from protocol.errors import LetheError

if TYPE_CHECKING:
    from launcher.federation import LocalFederation

SERVERAPP_GRACE_S = 45.0
"""A just-submitted ServerApp needs this long to start and send its first heartbeat."""


class Supervisor:
    """Keeps a :class:`LocalFederation` running; see the module docstring."""

    def __init__(
        self,
        federation: LocalFederation,
        *,
        max_restarts: int = 5,
        window_s: float = 300.0,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.federation = federation
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.report = report
        self.clock = clock
        self.restarts: dict[str, list[float]] = {}
        self.gave_up: set[str] = set()
        self.serverapp_submitted = clock()

    def _budget(self, name: str) -> bool:
        """Whether ``name`` may be restarted now; records the restart if so."""
        if name in self.gave_up:
            return False
        now = self.clock()
        recent = [t for t in self.restarts.get(name, []) if now - t < self.window_s]
        if len(recent) >= self.max_restarts:
            self.gave_up.add(name)
            self.report(
                f"supervisor: {name} crashed {len(recent)} times in {self.window_s:.0f} s; "
                "leaving it down (see its log)"
            )
            return False
        self.restarts[name] = [*recent, now]
        return True

    def _count(self, name: str) -> str:
        return f"restart {len(self.restarts[name])} of {self.max_restarts} in {self.window_s:.0f} s"

    def check(self) -> None:
        """Restart whatever crashed (see the module docstring); never raises."""
        fed = self.federation
        if fed.devnet is not None and not fed.devnet.running() and self._budget("chain"):
            try:
                fed.devnet.stop()
                fed.devnet.start()
                self.report(
                    f"supervisor: anvil died; restarted from its snapshot ({self._count('chain')})"
                )
            except LetheError as exc:
                self.report(f"supervisor: anvil did not restart: {exc}")
        superlink_restarted = False
        for child in list(fed.group.children):
            if child.stopped or child.alive():
                continue
            if child.name == "superlink":
                superlink_restarted = self._restart(child)
            else:
                self._restart(child)
        if (superlink_restarted or self._serverapp_down()) and self._budget("serverapp"):
            try:
                fed.submit_run()
                self.serverapp_submitted = self.clock()
                self.report(f"supervisor: ServerApp submitted again ({self._count('serverapp')})")
            except LetheError as exc:
                self.report(f"supervisor: the ServerApp could not be submitted: {exc}")

    def _restart(self, child: Child) -> bool:
        code = child.popen.returncode
        if not self._budget(child.name):
            return False
        try:
            self.federation.restart_child(child)
        except ProcessError as exc:
            self.report(f"supervisor: {child.name} did not restart: {exc}")
            return False
        self.report(
            f"supervisor: {child.name} exited (code {code}); restarted ({self._count(child.name)})"
            + (f"\n{tail(child.log, 5)}" if code else "")
        )
        return True

    def _serverapp_down(self) -> bool:
        """The ServerApp stopped or went silent, and nobody asked it to stop."""
        db = self.federation.db
        if db is None or db.get_control("stop") == "1":
            return False
        if self.clock() - self.serverapp_submitted < SERVERAPP_GRACE_S:
            return False
        beat = read_heartbeat(db)
        if beat is None or beat.step == "stopped":
            return True
        return time.time() - beat.at > STALE_AFTER_S
