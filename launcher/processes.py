"""Start, watch and always stop the local processes of a loopback federation.

Each child runs in its own process group with its output in a log file, so stopping it
also stops what it spawned (the SuperLink's ServerApp, the SuperNode's helpers), and a
failure can be reported with the last lines of the right log.
"""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocol.errors import LetheError


class ProcessError(LetheError):
    """A child process failed to start, died early, or did not become ready in time."""


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file (empty if it does not exist)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Child:
    """One started process, how it was started (to start it again) and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    argv: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    cwd: Path | None = None
    stopped: bool = False
    restarts: list[float] = field(default_factory=list)
    """When the supervisor restarted it (``time.monotonic()``)."""

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        self.stopped = True
        if not self.alive():
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, not a shutdown."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.popen.wait(timeout=5)


def _spawn(
    name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None, cwd: Path | None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        try:
            return subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {name} ({argv[0]}): {exc}") from exc


@dataclass
class ProcessGroup:
    """Children started together and stopped together, newest first."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        """Start ``argv`` in a new session, its output appended to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        child = Child(name, _spawn(name, argv, log, env, cwd), log, tuple(argv), env, cwd)
        self.children.append(child)
        return child

    def restart(self, child: Child) -> None:
        """Start a dead child again, as it was first started (same object, new process)."""
        if child.alive():
            raise ProcessError(f"{child.name} is still running")
        child.popen = _spawn(child.name, child.argv, child.log, child.env, child.cwd)
        child.stopped = False
        child.restarts.append(time.monotonic())

    def wait_until(
        self, child: Child, ready: Callable[[], bool], *, timeout: float, what: str
    ) -> None:
        """Poll ``ready`` until true; fail with the child's log if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not child.alive():
                raise ProcessError(
                    f"{child.name} exited (code {child.popen.returncode}) before {what}:\n"
                    f"{tail(child.log)}"
                )
            time.sleep(0.1)
        raise ProcessError(f"{child.name}: no {what} within {timeout:.0f} s:\n{tail(child.log)}")

    def stop_all(self) -> None:
        """Stop every child, newest first; never raises."""
        for child in reversed(self.children):
            # A child that cannot be stopped must not keep the others running.
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()
