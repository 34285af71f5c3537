"""When a stage stops waiting for the nodes that have not answered yet.

A dead node used to cost a stage its whole timeout (30 s). The nodes of a stage do the
same small piece of work, so their answers arrive close together; once a majority of
the asked nodes answered, the others get ``max(floor_s, factor × median latency so far)``
more, never past the stage's timeout. The margin is measured, not guessed: a loaded
machine that slows every node widens it with them, so a node that is slow but alive is
kept, while a dead or silent one costs about the floor. ``train`` is exempt (a forget
owner retrains while the others only commit; see docs/rounds.md): there the SuperLink's
heartbeat notices a dead node.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StragglerRule:
    """How long the rest of a stage may lag behind a majority of its nodes."""

    floor_s: float = 1.5
    factor: float = 3.0

    @staticmethod
    def quorum(asked: int) -> int:
        """Replies after which the rule starts: a majority, ⌊n/2⌋ + 1 (t of the default
        threshold, so enough summed shares already came when it cuts the rest off)."""
        return asked // 2 + 1

    def grace(self, latencies: Sequence[float]) -> float:
        """The margin the missing nodes get after the quorum's last reply."""
        return max(self.floor_s, self.factor * statistics.median(latencies))

    def stop_after(self, timeout: float, asked: int, latencies: Sequence[float]) -> float:
        """Seconds after the stage began at which to stop waiting, given the latencies of
        the replies so far (an error reply is no latency: it neither starts nor widens
        the margin)."""
        need = self.quorum(asked)
        if len(latencies) < need or len(latencies) >= asked:
            return timeout
        ordered = sorted(latencies)
        return min(timeout, ordered[need - 1] + self.grace(ordered))
