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
        self, stage: str, records: Mapping[int, WireRecord], timeout: float
    ) -> dict[int, WireRecord]:
        """Send one record per node; return the replies (not error replies) that came in time."""
        ...


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
        self, stage: str, records: Mapping[int, WireRecord], timeout: float
    ) -> dict[int, WireRecord]:
        replies: dict[int, WireRecord] = {}
        self.errors = {}
        for node, record in records.items():
            endpoint = self.nodes.get(node)
            if endpoint is None:
                logger.warning("%s: node %s is not connected", stage, node)
                continue
            try:
                replies[node] = dict(endpoint(stage, dict(record)))
            except Exception as exc:  # what Flower turns into an error reply
                self.errors[node] = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: node %s failed: %s", stage, node, self.errors[node])
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
        self, stage: str, records: Mapping[int, WireRecord], timeout: float
    ) -> dict[int, WireRecord]:
        from flwr.app import Message

        messages = [
            Message(to_record_dict(r), dst_node_id=nid, message_type=stage, ttl=timeout + 30)
            for nid, r in records.items()
        ]
        # Who each message went to: an error reply made by the SuperLink (node offline, an
        # upload cut short) carries the SuperLink's own id as its source, not the node's.
        sent_to = {
            mid: int(m.metadata.dst_node_id)
            for mid, m in zip(self.grid.push_messages(messages), messages, strict=False)
            if mid
        }
        waiting = set(sent_to)
        replies: dict[int, WireRecord] = {}
        self.errors = {}
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(waiting)):
                asked = reply.metadata.reply_to_message_id
                waiting.discard(asked)
                node = sent_to.get(asked, int(reply.metadata.src_node_id))
                if reply.has_error():
                    self.errors[node] = str(reply.error.reason)
                    logger.warning("%s: node %s failed: %s", stage, node, reply.error.reason)
                    continue
                try:
                    replies[node] = from_record_dict(reply.content)
                except ProtocolError as exc:
                    self.errors[node] = str(exc)
            if waiting:
                time.sleep(self.poll_s)
        for asked in waiting:
            logger.warning(
                "%s: node %s did not answer within %.0f s", stage, sent_to[asked], timeout
            )
        return replies
