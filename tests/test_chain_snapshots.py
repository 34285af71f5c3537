"""The dev chain survives kills: snapshots are whole or absent, never a broken chain.

Each test runs real anvil processes and kills them with SIGKILL, as a crash or an OOM
killer would.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from launcher.devnet import Devnet, DevnetError
from protocol.files import previous_path

SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
RECEIVER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def rpc(url: str, method: str, params: list[Any] | None = None) -> object:
    body = requests.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}, timeout=5
    ).json()
    assert "result" in body, body
    return body["result"]


def height(url: str) -> int:
    return int(str(rpc(url, "eth_blockNumber")), 16)


def block_hash(url: str, number: int) -> str:
    block = rpc(url, "eth_getBlockByNumber", [hex(number), False])
    assert isinstance(block, dict)
    return str(block["hash"])


def send(url: str, stop: threading.Event) -> None:
    """Mine transactions back to back until told to stop or anvil dies."""
    while not stop.is_set():
        try:
            rpc(url, "eth_sendTransaction", [{"from": SENDER, "to": RECEIVER, "value": "0x1"}])
        except (requests.RequestException, AssertionError):
            return


def test_kills_at_random_moments_never_lose_a_snapshotted_block(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    rng = random.Random(7)
    history: dict[int, str] = {}
    saved = 0
    for _ in range(12):
        chain = Devnet(state, snapshot_poll_s=0.02).start()
        url = chain.rpc_url
        # Every block a snapshot recorded is back, with the same hash.
        assert height(url) >= saved
        for number, known in history.items():
            if number <= height(url):
                assert block_hash(url, number) == known
        stop = threading.Event()
        sender = threading.Thread(target=send, args=(url, stop))
        sender.start()
        time.sleep(rng.uniform(0.05, 0.4))
        watcher = chain._snapshots
        assert watcher is not None
        assert chain._process is not None
        chain._process.kill()  # SIGKILL, possibly in the middle of a snapshot
        saved = max(saved, watcher.saved_height)
        stop.set()
        sender.join()
        chain.stop()  # anvil is dead: no final snapshot
        # What the chain looked like up to the last snapshot is what the next start shows.
        with Devnet(state, snapshot_poll_s=60) as probe:
            for number in range(1, height(probe.rpc_url) + 1):
                history.setdefault(number, block_hash(probe.rpc_url, number))
    assert saved > 12, "transactions were mined and snapshotted across the kills"


def test_a_cut_short_snapshot_falls_back_to_the_one_before(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    with Devnet(state, snapshot_poll_s=60) as chain:  # snapshots only on stop
        rpc(chain.rpc_url, "evm_mine")
        first = height(chain.rpc_url)
    with Devnet(state, snapshot_poll_s=60) as chain:
        rpc(chain.rpc_url, "evm_mine")
        assert height(chain.rpc_url) == first + 1
    assert previous_path(state).exists()
    state.write_bytes(b"")  # what an in-place write cut by a kill leaves
    with Devnet(state) as chain:
        assert height(chain.rpc_url) == first


def test_a_missing_snapshot_after_a_crash_between_renames_uses_the_previous(
    tmp_path: Path,
) -> None:
    state = tmp_path / "anvil-state.json"
    with Devnet(state, snapshot_poll_s=60) as chain:
        rpc(chain.rpc_url, "evm_mine")
        first = height(chain.rpc_url)
    with Devnet(state, snapshot_poll_s=60) as chain:
        rpc(chain.rpc_url, "evm_mine")
    state.unlink()
    with Devnet(state) as chain:
        assert height(chain.rpc_url) == first


def test_no_readable_snapshot_refuses_to_start_an_empty_chain(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    with Devnet(state) as chain:
        rpc(chain.rpc_url, "evm_mine")
    state.write_bytes(b'{"accounts": {}, "blo')
    previous_path(state).write_bytes(b"")
    with pytest.raises(DevnetError, match="refusing to start an empty chain"):
        Devnet(state).start()
