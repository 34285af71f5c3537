"""Run Flower's real SuperLink, accepting SuperNode heartbeats down to 1 s.

flwr (1.42, as 1.41) refuses a heartbeat interval under 10 s, and counts a node offline only
2 × interval after its last one: a killed node then holds every pending message for up
to 20 s (``train`` waits for it; later stages cut it off sooner, ``coordinator.deadline``).
This entry point runs the unmodified ``flower-superlink`` command line with only that
lower bound moved (``infra.flower.allow_short_heartbeats``); a killed node started with
``LETHE_SUPERNODE_HEARTBEAT_S=3`` (what the local federation sets) is noticed within
6 s. A stock SuperLink still works with Lethe's nodes at their default 10 s.

Usage: ``python -m coordinator.superlink [flower-superlink arguments]``.
"""

import sys

from infra import flower


def main() -> None:
    """Start ``flower-superlink`` with the given arguments, allowing 1 s heartbeats."""
    try:
        flower.allow_short_heartbeats()
    except flower.FlowerVersionError as exc:
        raise SystemExit(str(exc)) from exc
    from flwr.superlink.cli import flower_superlink

    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
