"""Message stages over Flower's Grid: push to many nodes, poll replies briskly, honour timeouts.

``Grid.send_and_receive`` sleeps 3 s between pulls and waits for every reply; a secure
round has four stages and must go on without nodes that dropped out. So a stage here is
``push_messages`` once, then ``pull_messages`` every ``poll_s`` until every node answered
or the stage's timeout passed; error replies and silence both count as "no answer".
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Protocol

from protocol.errors import ProtocolError
from protocol.messages import Payload, from_record_dict, to_record_dict

if TYPE_CHECKING:
    from flwr.serverapp import Grid

logger = logging.getLogger("lethe.coordinator")


class Transport(Protocol):
    """How the round workflow reaches nodes; Flower in production."""

    def node_ids(self) -> list[int]:
        """Nodes currently connected."""
        ...

    def exchange(
        self, stage: str, payloads: dict[int, Payload], timeout: float
    ) -> dict[int, Payload]:
        """Send one payload per node; return the valid replies that arrived in time."""
        ...


def tune_object_pulls(backoff_s: float) -> None:
    """Retry reply-object pulls sooner than Flower's 1 s first back-off (same protocol)."""
    import flwr.superlink.grid.http_grid as http_grid

    pull = functools.partial(
        getattr(http_grid, "pull_objects"),  # noqa: B009 (not in its __all__)
        initial_backoff=backoff_s / 5,
        backoff_cap=backoff_s,
    )
    setattr(http_grid, "pull_objects", pull)  # noqa: B010


class FlowerTransport:
    """A :class:`Transport` over a ServerApp's ``Grid``."""

    def __init__(self, grid: Grid, *, poll_s: float = 0.05) -> None:
        self.grid = grid
        self.poll_s = poll_s
        self.errors: dict[int, str] = {}

    def node_ids(self) -> list[int]:
        return sorted(int(n) for n in self.grid.get_node_ids())

    def exchange(
        self, stage: str, payloads: dict[int, Payload], timeout: float
    ) -> dict[int, Payload]:
        from flwr.app import Message

        messages = [
            Message(to_record_dict(p), dst_node_id=nid, message_type=stage, ttl=timeout + 30)
            for nid, p in payloads.items()
        ]
        pushed = [m for m in self.grid.push_messages(messages) if m]
        waiting = set(pushed)
        replies: dict[int, Payload] = {}
        self.errors = {}
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(waiting)):
                waiting.discard(reply.metadata.reply_to_message_id)
                node = int(reply.metadata.src_node_id)
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
        for _ in waiting:
            logger.warning("%s: a node did not answer within %.0f s", stage, timeout)
        return replies
