"""Keep Flower's SuperNode running beside the node's worker.

Flower ends a SuperNode when the SuperLink refuses it (its authentication key is not
registered yet: exit 305) or stays unreachable past its retries. The worker beside it
would then poll a Runtime API that is gone, forever, and the node would be missing from
every round until someone restarts it by hand. So ``lethe-node run`` starts the SuperNode
again, after a back-off that doubles from ``first_backoff_s`` up to ``max_backoff_s`` (and
starts over once a SuperNode ran longer than ``healthy_s``). The same command line each
time: its identity (keys, node.json) does not change.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence


class SuperNodeKeeper:
    """Runs one command line in a child process and starts it again whenever it exits."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        healthy_s: float = 60.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.argv = list(argv)
        self.env = env
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy_s = healthy_s
        self.log = log
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._keep, name="supernode-keeper", daemon=True)

    def start(self) -> SuperNodeKeeper:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        with self._lock:
            return self._process is not None and self._process.poll() is None

    def _keep(self) -> None:
        backoff = self.first_backoff_s
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = subprocess.Popen(self.argv, env=self.env)
                self.starts += 1
                process = self._process
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= self.healthy_s:
                backoff = self.first_backoff_s
            self.log(f"SuperNode exited with code {code}; starting it again in {backoff:.1f} s")
            if self._stopping.wait(backoff):
                return
            backoff = min(2 * backoff, self.max_backoff_s)

    def stop(self, timeout: float = 10.0) -> None:
        """End the child (SIGTERM, then SIGKILL after ``timeout``) and start no other."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
