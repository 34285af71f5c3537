"""`lethe-node run --metrics-port`: the node's work and standing in the Prometheus format.

The ClientApp's tasks run in the `lethe-node run` process (the warm worker), so the
counters live in memory there and start at zero with it, as Prometheus expects of a
counter. Stake and rewards are the chain's, read from its events at each scrape
(``protocol.stakes``), so they are right whatever happened while the node was down.

A refusal's reason is its message with numbers, addresses and hashes masked and cut at
the first detail (``round N is not the chain's next round``): a label from the node's
fixed set of checks, never a value a request chooses; and at most ``MAX_REASONS`` of
them, so no stream of odd requests can grow the scrape without bound.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.messages import APPROVE

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from protocol.ledger import Ledger

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
MAX_REASON = 80
MAX_REASONS = 64
"""Distinct refusal labels kept; a node's checks raise about 40 kinds."""
_DETAIL = re.compile(r"[:(;\[{]|\s['\"]")
"""Where a message's details begin: a colon, a bracket, a quoted value."""
_REASONS: set[str] = set()
_REASONS_LOCK = threading.Lock()

ANSWERS = Counter("lethe_node_answers", "Stage requests answered", ["stage"])
ROUNDS = Counter("lethe_node_rounds_answered", "Rounds this node answered to the last stage")
REFUSALS = Counter(
    "lethe_node_refusals", "Stage requests refused by a check, by reason", ["stage", "reason"]
)
ERRORS = Counter("lethe_node_errors", "Stage requests that failed by an error", ["stage"])
STAGE_SECONDS = Histogram(
    "lethe_node_stage_seconds", "Seconds to answer a stage", ["stage"], buckets=SECONDS_BUCKETS
)
RETRAIN_SECONDS = Histogram(
    "lethe_node_retrain_seconds",
    "Seconds of each exact-forgetting retrain (one per batch of records)",
    buckets=SECONDS_BUCKETS,
)
FORGETS = Counter("lethe_node_forgets", "Records this node forgot (retrained without)")
LAST_STAGE = APPROVE
"""A round's last stage: answering it is answering the round."""

_MASKS = (
    (re.compile(r"0x[0-9a-fA-F]+"), "HEX"),
    (re.compile(r"\b[0-9a-fA-F]{16,}\b"), "HEX"),
    (re.compile(r"\d+(\.\d+)?"), "N"),
)


def refusal_reason(message: str) -> str:
    """The bounded label of a refusal: the check's words, no values; past
    ``MAX_REASONS`` distinct ones, ``other``."""
    reason = message
    for pattern, mask in _MASKS:
        reason = pattern.sub(mask, reason)
    reason = _DETAIL.split(reason, maxsplit=1)[0].strip()[:MAX_REASON] or "unspecified"
    with _REASONS_LOCK:
        if reason not in _REASONS and len(_REASONS) >= MAX_REASONS:
            return "other"
        _REASONS.add(reason)
    return reason


@contextmanager
def answering(stage: str, refused: type[Exception]) -> Iterator[None]:
    """Time and count one stage request; a refusal (a ``refused`` error) by its reason,
    any other error apart."""
    began = time.monotonic()
    try:
        yield
    except refused as exc:
        REFUSALS.labels(stage, refusal_reason(str(exc))).inc()
        raise
    except Exception:
        ERRORS.labels(stage).inc()
        raise
    ANSWERS.labels(stage).inc()
    STAGE_SECONDS.labels(stage).observe(time.monotonic() - began)
    if stage == LAST_STAGE:
        ROUNDS.inc()


@contextmanager
def retraining(records: int) -> Iterator[None]:
    """Time one forgetting retrain of ``records`` records (counted once it is done)."""
    began = time.monotonic()
    yield
    RETRAIN_SECONDS.observe(time.monotonic() - began)
    FORGETS.inc(records)


class StandingCollector(Collector):
    """The node's stake, slashes and rewards, replayed from the chain's events."""

    def __init__(self, ledger: Callable[[], Ledger], address: str) -> None:
        self.ledger = ledger
        self.address = address
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        from protocol.errors import LetheError
        from protocol.stakes import read_stake_ledger

        up = GaugeMetricFamily("lethe_node_chain_up", "Whether the chain answered this scrape")
        try:
            with self._lock:
                standing = read_stake_ledger(self.ledger()).node(self.address)
        except LetheError:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        for name, help_text, value in (
            ("lethe_node_stake_wei", "Stake held by the contract", standing.stake),
            (
                "lethe_node_slashed_wei",
                "Stake slashed for missed forget deadlines",
                standing.slashed,
            ),
            ("lethe_node_rewards_claimed_wei", "Rewards claimed", standing.claimed),
            (
                "lethe_node_rewards_claimable_wei",
                "Rewards earned, not claimed yet",
                standing.claimable,
            ),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)


class _Served(Collector):
    """This process's counters (prometheus-client's default registry) and the standing."""

    def __init__(self, *parts: Collector) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


def serve_metrics(
    port: int, host: str, *, ledger: Callable[[], Ledger], address: str
) -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (prometheus-client's);
    returns the server (``shutdown()`` stops it)."""
    served = _Served(REGISTRY, StandingCollector(ledger, address))
    server, _thread = start_http_server(port, addr=host, registry=served)
    return server
