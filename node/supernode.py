"""Run Flower's real SuperNode with a shorter idle poll, so a round is not paced by sleeps.

flwr 1.41's SuperNode sleeps a fixed 3 s whenever the SuperLink has no message for it,
waits for replies in 0.5 s steps, and pulls message objects with a 1 s initial back-off.
On a loopback federation those sleeps, not computation, set the length of every message
stage (~6 s measured). This entry point runs the unmodified ``flower-supernode`` command
line with only those waits shortened; every other behaviour is Flower's own.

Usage: ``python -m node.supernode [flower-supernode arguments]``; the poll interval is
``LETHE_SUPERNODE_POLL_S`` (default 0.1 s).
"""

import functools
import os
import sys
import time
import types

DEFAULT_POLL_S = 0.1


def _patch_waits(poll_s: float) -> None:
    """Cap the SuperNode loop's sleeps at ``poll_s`` and start object pulls without back-off."""
    import flwr.supernode.start_client_internal as loop

    real_sleep = time.sleep
    # A private copy of the ``time`` module namespace, so only the SuperNode loop is affected.
    names = {k: getattr(time, k) for k in dir(time) if not k.startswith("__")}
    shim = types.SimpleNamespace(**names)
    shim.sleep = lambda seconds: real_sleep(min(seconds, poll_s))
    setattr(loop, "time", shim)  # noqa: B010
    pull = functools.partial(
        getattr(loop, "pull_objects"),  # noqa: B009 (not in its __all__)
        initial_backoff=poll_s / 10,
        backoff_cap=poll_s,
    )
    setattr(loop, "pull_objects", pull)  # noqa: B010


def main() -> None:
    """Start ``flower-supernode`` with the given arguments and shortened waits."""
    poll_s = float(os.environ.get("LETHE_SUPERNODE_POLL_S", DEFAULT_POLL_S))
    if not 0.01 <= poll_s <= 3.0:
        raise SystemExit(f"LETHE_SUPERNODE_POLL_S must be within [0.01, 3.0] s, got {poll_s}")
    _patch_waits(poll_s)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
