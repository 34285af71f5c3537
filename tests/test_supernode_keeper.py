"""A node's SuperNode that Flower ends (e.g. refused: auth key not registered yet) comes back
by itself; a stopped node starts none again."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from node.keeper import SuperNodeKeeper

# Exits on its first two starts (as a SuperNode the SuperLink refused), then stays up.
REFUSED_TWICE = """
import sys, time
from pathlib import Path
count = Path(sys.argv[1])
n = int(count.read_text() or 0) + 1 if count.exists() else 1
count.write_text(str(n))
if n <= 2:
    sys.exit(5)
time.sleep(60)
"""


def _until(check: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        time.sleep(0.02)
    return False


def test_a_supernode_that_exits_is_started_again_until_it_stays_up(tmp_path: Path) -> None:
    count = tmp_path / "starts"
    lines: list[str] = []
    keeper = SuperNodeKeeper(
        [sys.executable, "-c", REFUSED_TWICE, str(count)],
        first_backoff_s=0.05,
        log=lines.append,
    ).start()
    try:
        assert _until(lambda: count.exists() and count.read_text() == "3" and keeper.running)
        assert keeper.starts == 3
        assert [line.split(";")[0] for line in lines] == ["SuperNode exited with code 5"] * 2
        assert "0.1 s" in lines[1]  # the back-off doubles
    finally:
        keeper.stop(timeout=5)
    assert not keeper.running


def test_a_stopped_keeper_ends_its_supernode_and_starts_no_other(tmp_path: Path) -> None:
    count = tmp_path / "starts"
    count.write_text("2")  # the next start stays up
    keeper = SuperNodeKeeper(
        [sys.executable, "-c", REFUSED_TWICE, str(count)], first_backoff_s=0.05, log=print
    ).start()
    assert _until(lambda: keeper.running)
    keeper.stop(timeout=5)
    time.sleep(0.3)
    assert not keeper.running
    assert keeper.starts == 1
