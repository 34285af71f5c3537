"""How the round reaches nodes: over Flower's Grid, or in memory for tests.

A transport moves wire records (``protocol.messages.WireRecord``) and nothing else; the
coordinator builds and checks the typed messages, so every transport behaves the same on
a malformed reply. Error replies and silence both count as "no answer".

Over Flower, ``Grid.send_and_receive`` sleeps 3 s between pulls and waits for every
reply; a secure round has four stages and must go on without nodes that dropped out. So
a stage here is ``push_messages`` once, then ``pull_messages`` every ``poll_s`` until
every node answered or the stage's timeout passed.

In memory (:class:`InMemoryTransport`, the shape of Flower's in-memory grid), each node
is a function answering ``(stage, record)``, called in this process: whole rounds run
in unit tests, with dropouts and garbage injected by wrapping those functions. Time is
not modelled: a node drops out by raising (an error reply) or by not being connected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from coordinator.deadline import StragglerRule
from protocol.errors import ProtocolError
from protocol.messages import WireRecord, from_record_dict, to_record_dict

if TYPE_CHECKING:
    from flwr.serverapp import Grid

logger = logging.getLogger("lethe.coordinator")


class Transport(Protocol):
    """How the round workflow reaches nodes; Flower in production."""

    def node_ids(self) -> list[int]:
        """Nodes currently connected."""
        ...

    def exchange(
        self,
        stage: str,
        records: Mapping[int, WireRecord],
        timeout: float,
        *,
        stragglers: StragglerRule | None = None,
    ) -> dict[int, WireRecord]:
        """Send one record per node; return the replies (not error replies) that came in
        time: within ``timeout``, and within ``stragglers``' margin once most answered."""
        ...


class NoReply(Exception):
    """Raised by an in-memory node that never answers (alive, silent)."""


NodeEndpoint = Callable[[str, WireRecord], WireRecord]
"""A node as the in-memory transport sees it: answers a stage's record or raises."""


class InMemoryTransport:
    """A :class:`Transport` whose nodes are functions in this process."""

    def __init__(self, nodes: Mapping[int, NodeEndpoint]) -> None:
        self.nodes = dict(nodes)
        self.errors: dict[int, str] = {}

    def node_ids(self) -> list[int]:
        return sorted(self.nodes)

    def exchange(
        self,
        stage: str,
        records: Mapping[int, WireRecord],
        timeout: float,
        *,
        stragglers: StragglerRule | None = None,
    ) -> dict[int, WireRecord]:
        started = time.monotonic()
        arrived: list[tuple[float, int, WireRecord]] = []
        self.errors = {}
        for node, record in records.items():
            endpoint = self.nodes.get(node)
            if endpoint is None:
                logger.warning("%s: node %s is not connected", stage, node)
                continue
            called = time.monotonic()
            try:
                reply = dict(endpoint(stage, dict(record)))
            except NoReply:
                continue
            except Exception as exc:  # what Flower turns into an error reply
                self.errors[node] = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: node %s failed: %s", stage, node, self.errors[node])
                continue
            arrived.append((time.monotonic() - called, node, reply))
        # Replayed in arrival order, as if every node had worked in parallel.
        stop, latencies = timeout, []
        replies: dict[int, WireRecord] = {}
        for latency, node, reply in sorted(arrived, key=lambda a: a[0]):
            if latency > stop:
                break
            replies[node] = reply
            latencies.append(latency)
            if stragglers is not None:
                stop = stragglers.stop_after(timeout, len(records), latencies)
        answered = set(replies) | set(self.errors) | (set(records) - set(self.nodes))
        for node in sorted(set(records) - answered):
            logger.warning("%s: node %s did not answer within %.1f s", stage, node, stop)
        if set(records) - answered:
            time.sleep(max(0.0, stop - (time.monotonic() - started)))
        return replies


class FlowerTransport:
    """A :class:`Transport` over a ServerApp's ``Grid``."""

    def __init__(self, grid: Grid, *, poll_s: float = 0.05) -> None:
        self.grid = grid
        self.poll_s = poll_s
        self.errors: dict[int, str] = {}

    def node_ids(self) -> list[int]:
        return sorted(int(n) for n in self.grid.get_node_ids())

    def exchange(
        self,
        stage: str,
        records: Mapping[int, WireRecord],
        timeout: float,
        *,
        stragglers: StragglerRule | None = None,
    ) -> dict[int, WireRecord]:
        from flwr.app import Message

        messages = [
            Message(to_record_dict(r), dst_node_id=nid, message_type=stage, ttl=timeout + 30)
            for nid, r in records.items()
        ]
        pushing = time.monotonic()
        # Who each message went to: an error reply made by the SuperLink (node offline, an
        # upload cut short) carries the SuperLink's own id as its source, not the node's.
        sent_to = {
            mid: int(m.metadata.dst_node_id)
            for mid, m in zip(self.grid.push_messages(messages), messages, strict=False)
            if mid
        }
        waiting = set(sent_to)
        replies: dict[int, WireRecord] = {}
        latencies: list[float] = []
        self.errors = {}
        started = time.monotonic()
        stop = timeout
        while waiting and time.monotonic() - started < stop:
            for reply in self.grid.pull_messages(list(waiting)):
                asked = reply.metadata.reply_to_message_id
                waiting.discard(asked)
                node = sent_to.get(asked, int(reply.metadata.src_node_id))
                if reply.has_error():
                    self.errors[node] = str(reply.error.reason)
                    logger.warning("%s: node %s failed: %s", stage, node, reply.error.reason)
                    continue
                latencies.append(time.monotonic() - started)
                try:
                    replies[node] = from_record_dict(reply.content)
                except ProtocolError as exc:
                    self.errors[node] = str(exc)
            if stragglers is not None:
                stop = stragglers.stop_after(timeout, len(sent_to), latencies)
            if waiting:
                time.sleep(self.poll_s)
        for asked in waiting:
            logger.warning("%s: node %s did not answer within %.1f s", stage, sent_to[asked], stop)
        logger.info(
            "%s: %d/%d replies in %.2f s (pushed in %.2f s; replies at %s s)",
            stage,
            len(replies),
            len(sent_to),
            time.monotonic() - started,
            started - pushing,
            ", ".join(f"{x:.2f}" for x in latencies),
        )
        return replies
