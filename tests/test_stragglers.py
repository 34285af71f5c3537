"""A stage stops waiting for a dead or silent node soon after most nodes answered.

Specifications:
- the rule: nothing is cut before a majority answered; then the rest get max(floor,
  factor × median latency), never past the stage timeout; slower nodes widen the margin;
- in memory, a stage with one never-answering node ends about the floor after the others,
  not at its 30 s timeout; a node late but within the margin is kept; one past it is not;
- ``train`` waits for a slow node (a forget owner retrains while the others commit);
- a whole round with a node silent at ``train.aggregate`` finalizes within seconds, the
  silent node named as dropped; a node slow at every later stage stays in the round.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from coordinator.deadline import StragglerRule
from coordinator.transport import InMemoryTransport, NoReply
from node.stages import answer
from protocol.messages import AGGREGATE, TRAIN, WireRecord

if TYPE_CHECKING:
    from tests.round_fixtures import MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]

RULE = StragglerRule(floor_s=0.3, factor=3.0)


def test_nothing_is_cut_before_a_majority_answered() -> None:
    assert RULE.stop_after(30.0, 5, [0.1, 0.1]) == 30.0
    assert RULE.stop_after(30.0, 5, [0.1, 0.1, 0.1]) == pytest.approx(0.4)


def test_the_margin_grows_with_the_median_latency_and_stops_at_the_timeout() -> None:
    assert RULE.stop_after(30.0, 3, [1.0, 2.0]) == pytest.approx(2.0 + 3 * 1.5)
    assert RULE.stop_after(5.0, 3, [1.0, 2.0]) == 5.0
    assert RULE.stop_after(30.0, 2, [0.1]) == 30.0  # one of two is no majority


def _node(delay_s: float | None):  # type: ignore[no-untyped-def]
    """A node answering after ``delay_s``, or never (None)."""

    def endpoint(stage: str, record: WireRecord) -> WireRecord:
        if delay_s is None:
            raise NoReply
        time.sleep(delay_s)
        return {"stage": stage}

    return endpoint


def _timed_exchange(
    delays: list[float | None], stage: str = AGGREGATE, rule: StragglerRule | None = RULE
) -> tuple[set[int], float]:
    transport = InMemoryTransport({i: _node(d) for i, d in enumerate(delays)})
    started = time.monotonic()
    replies = transport.exchange(
        stage, {i: {"q": "x"} for i in range(len(delays))}, 30.0, stragglers=rule
    )
    return set(replies), time.monotonic() - started


def test_a_never_answering_node_costs_the_floor_not_the_timeout() -> None:
    answered, seconds = _timed_exchange([0.01, 0.01, None])
    assert answered == {0, 1}
    assert 0.3 <= seconds < 1.5


def test_a_late_node_within_the_margin_is_kept_one_past_it_is_not() -> None:
    answered, _ = _timed_exchange([0.02, 0.02, 0.2])
    assert answered == {0, 1, 2}
    answered, _ = _timed_exchange([0.02, 0.02, 0.6])
    assert answered == {0, 1}


def test_without_the_rule_a_slow_node_is_waited_for() -> None:
    answered, seconds = _timed_exchange([0.01, 0.01, 0.6], stage=TRAIN, rule=None)
    assert answered == {0, 1, 2}
    assert seconds >= 0.6


def _silent_at(stage: str):  # type: ignore[no-untyped-def]
    def endpoint(node: NodeHandle, asked: str, record: WireRecord) -> WireRecord:
        if asked == stage:
            raise NoReply
        return answer(node.runtime, asked, record)

    return endpoint


def _slow_after_train(delay_s: float):  # type: ignore[no-untyped-def]
    def endpoint(node: NodeHandle, asked: str, record: WireRecord) -> WireRecord:
        reply = answer(node.runtime, asked, record)
        if asked != TRAIN:
            time.sleep(delay_s)
        return reply

    return endpoint


def test_round_goes_on_without_a_node_silent_at_aggregate(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    assert fed.coordinator.config.stage_timeout_s == 30.0
    silent = fed.nodes[2].address
    fed.replace(2, _silent_at(AGGREGATE))
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    assert outcome.info["dropped"] == [silent]
    assert outcome.info["seconds"] < 10.0  # the floor (1.5 s), not the 30 s timeout


def test_a_node_slow_at_every_stage_within_the_margin_stays_in(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    fed.replace(1, _slow_after_train(0.8))  # the floor is 1.5 s; the others take ~0.1 s
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    assert outcome.info["dropped"] == []
    assert fed.nodes[1].address in outcome.info["approvals"]
