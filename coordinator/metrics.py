"""``GET /metrics``: the coordinator's state in the Prometheus text format, at scrape time.

Rounds run in the ServerApp's process and the API in another, so nothing here counts in
memory: a collector reads the durable state both share (the rounds table, the forget
queue, the ServerApp's heartbeat) and the health probe's chain and store checks each time
it is scraped. The numbers survive a restart of either process and never disagree with
``/rounds`` or ``/forget``. The only state written for metrics is the count of rounds
that ended without a proposal (they leave no row): :func:`count_round` keeps it in the
queue's control table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from coordinator.queue import STATES, CoordinatorDB

STAGES = ("train", "share", "aggregate", "publish", "approve")
STAGE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""A stage takes ~0.1-3 s on a quiet machine, tens of seconds on a loaded one."""
UNPROPOSED_KEY = "metrics.unproposed_rounds"
OPEN_STATES = ("received", "dispatched", "certified")
CONTENT_TYPE = CONTENT_TYPE_LATEST


@contextmanager
def count_round(
    db: CoordinatorDB, failed: type[Exception], futile: type[Exception]
) -> Iterator[None]:
    """Count a round that raises ``failed`` (too few answered) or ``futile`` (stopped after
    train: it could move no request); a proposed round is counted from its row."""
    try:
        yield
    except failed as exc:
        counts = unproposed_rounds(db)
        outcome = "futile" if isinstance(exc, futile) else "failed"
        counts[outcome] = counts.get(outcome, 0) + 1
        db.set_control(UNPROPOSED_KEY, json.dumps(counts))
        raise


def unproposed_rounds(db: CoordinatorDB) -> dict[str, int]:
    """Rounds that ended before a proposal, by outcome ({} before the first)."""
    try:
        counts = json.loads(db.get_control(UNPROPOSED_KEY) or "{}")
    except ValueError:
        return {}
    if not isinstance(counts, dict):
        return {}
    return {k: v for k, v in counts.items() if isinstance(v, int)}


def _histogram(samples: Iterable[float]) -> tuple[list[tuple[str, float]], float]:
    values = sorted(samples)
    buckets = [(repr(b), float(sum(1 for v in values if v <= b))) for b in STAGE_BUCKETS_S]
    buckets.append(("+Inf", float(len(values))))
    return buckets, sum(values)


class CoordinatorCollector(Collector):
    """Every coordinator series, read from ``db`` (and ``health()``) at each scrape."""

    def __init__(
        self,
        db: CoordinatorDB,
        health: Callable[[], dict[str, Any]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.health = health
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from self._rounds()
        yield from self._forgets()
        if self.health is not None:
            yield from self._health(self.health())

    def _rounds(self) -> Iterator[Metric]:
        rows = self.db.list_rounds()
        by_outcome = {"finalized": 0, "proposed": 0, "failed": 0, "futile": 0}
        for row in rows:
            by_outcome[row["state"]] = by_outcome.get(row["state"], 0) + 1
        for outcome, count in unproposed_rounds(self.db).items():
            by_outcome[outcome] = count
        rounds = CounterMetricFamily(
            "lethe_rounds",
            "Rounds by outcome: finalized, proposed (not finalized), failed (too few "
            "answered), futile (stopped after train)",
            labels=["outcome"],
        )
        for outcome, count in by_outcome.items():
            rounds.add_metric([outcome], count)
        yield rounds
        stages = HistogramMetricFamily(
            "lethe_round_stage_seconds",
            "Seconds each stage of a proposed round took",
            labels=["stage"],
        )
        for stage in STAGES:
            seen = [
                float(row["stage_seconds"][stage])
                for row in rows
                if isinstance(row.get("stage_seconds"), dict) and stage in row["stage_seconds"]
            ]
            buckets, total = _histogram(seen)
            stages.add_metric([stage], buckets, total)
        yield stages
        finalized = [row["round"] for row in rows if row["state"] == "finalized"]
        yield GaugeMetricFamily(
            "lethe_last_finalized_round",
            "Number of the last finalized round (0: none yet)",
            value=max(finalized, default=0),
        )

    def _forgets(self) -> Iterator[Metric]:
        now = self.clock()
        count = GaugeMetricFamily(
            "lethe_forget_requests", "Forget requests by state", labels=["state"]
        )
        oldest = GaugeMetricFamily(
            "lethe_forget_oldest_age_seconds",
            "Age of the oldest open forget request in each state (0: none)",
            labels=["state"],
        )
        requests = self.db.list_forgets(STATES)
        for state in STATES:
            count.add_metric([state], sum(1 for r in requests if r.state == state))
        for state in OPEN_STATES:
            ages = [now - r.created_at for r in requests if r.state == state]
            oldest.add_metric([state], max(ages, default=0.0))
        yield count
        yield oldest

    def _health(self, info: dict[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "lethe_connected_nodes",
            "SuperNodes the SuperLink counts connected (ServerApp heartbeat)",
            value=info.get("connected_nodes", 0),
        )
        up = GaugeMetricFamily(
            "lethe_up", "Whether a part of the federation answers (1) or not (0)", labels=["part"]
        )
        for part in ("serverapp", "superlink", "chain", "store"):
            up.add_metric([part], 1.0 if (info.get(part) or {}).get("ok") else 0.0)
        yield up
        head = (info.get("chain") or {}).get("head")
        if isinstance(head, int):
            yield GaugeMetricFamily(
                "lethe_chain_head_block", "The chain's latest block", value=head
            )


def metrics_text(db: CoordinatorDB, health: Callable[[], dict[str, Any]] | None = None) -> bytes:
    """The Prometheus text exposition of every coordinator series, read now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CoordinatorCollector(db, health))
    return generate_latest(registry)
