"""Run Flower's real SuperNode with a shorter idle poll, so a round is not paced by sleeps.

flwr's SuperNode (1.42, as 1.41) sleeps a fixed 3 s whenever the SuperLink has no message for it,
waits for replies in 0.5 s steps, and pulls message objects with a 1 s initial back-off.
On a loopback federation those sleeps, not computation, set the length of every message
stage (~6 s measured). This entry point runs the unmodified ``flower-supernode`` command
line with only those waits shortened (``infra.flower.cap_supernode_waits``) and its
heartbeat sent every 10 s instead of 30 s (``shorten_supernode_heartbeat``: a killed node is
noticed by the SuperLink within 20 s, not 60 s); every other behaviour is Flower's own.
Against a SuperLink that allows it (``coordinator.superlink``, what ``lethe up`` runs),
``LETHE_SUPERNODE_HEARTBEAT_S=3`` has a killed node noticed within 6 s.

Usage: ``python -m node.supernode [flower-supernode arguments]``; the poll interval is
``LETHE_SUPERNODE_POLL_S`` (default 0.1 s), the heartbeat ``LETHE_SUPERNODE_HEARTBEAT_S``
(default 10 s, the shortest a stock SuperLink accepts).
"""

import os
import sys

from infra import flower

DEFAULT_POLL_S = 0.1
POLL_ENV = "LETHE_SUPERNODE_POLL_S"
HEARTBEAT_ENV = "LETHE_SUPERNODE_HEARTBEAT_S"


def main() -> None:
    """Start ``flower-supernode`` with the given arguments and shortened waits."""
    poll_s = float(os.environ.get(POLL_ENV, DEFAULT_POLL_S))
    if not 0.01 <= poll_s <= 3.0:
        raise SystemExit(f"{POLL_ENV} must be within [0.01, 3.0] s, got {poll_s}")
    heartbeat_s = float(os.environ.get(HEARTBEAT_ENV, flower.SUPERNODE_HEARTBEAT_S))
    if not flower.MIN_HEARTBEAT_S <= heartbeat_s <= 1800:
        raise SystemExit(f"{HEARTBEAT_ENV} must be within [1, 1800] s, got {heartbeat_s}")
    try:
        flower.cap_supernode_waits(poll_s)
        flower.shorten_supernode_heartbeat(heartbeat_s)
    except flower.FlowerVersionError as exc:
        raise SystemExit(str(exc)) from exc
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
