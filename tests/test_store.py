"""Both content stores: same CIDs, verified reads, clear errors, a real IPFS daemon."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aleph_cid
import pytest
import requests

from protocol.cid import CHUNK_SIZE, build_dag, cid_of
from protocol.errors import StoreError
from protocol.store import ContentStore, KuboStore, LocalStore, open_store
from protocol.store.kubo import api_url
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from tests.ipfs_daemon import IpfsDaemon

pytest_plugins = ["tests.ipfs_daemon"]

SIZES = [0, 1, 1000, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 7]


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "blocks")


@pytest.fixture
def kubo(ipfs_daemon: IpfsDaemon) -> KuboStore:
    return KuboStore(ipfs_daemon.api, timeout=10, lookup_timeout=0.5)


def leaf_of(store: LocalStore, data: bytes) -> Path:
    """The file of the DAG's first leaf (the first chunk of ``data``)."""
    return store.root / cid_of(data[:CHUNK_SIZE])


# Local blockstore


@pytest.mark.parametrize("size", SIZES)
def test_local_put_get_round_trip(local: LocalStore, size: int) -> None:
    data = payload(size)
    cid = local.put(data)
    assert cid == cid_of(data)
    assert local.get(cid) == data
    assert local.has(cid)
    assert local.pinned(cid)


def test_local_store_holds_exactly_the_dag_blocks(local: LocalStore) -> None:
    data = payload(3 * CHUNK_SIZE + 5)
    root, blocks = build_dag(data)
    assert local.put(data) == root
    on_disk = {path.name: path.read_bytes() for path in local.root.iterdir() if path.is_file()}
    assert on_disk == blocks


def test_both_backends_satisfy_the_interface(local: LocalStore) -> None:
    assert isinstance(local, ContentStore)
    assert isinstance(KuboStore("/ip4/127.0.0.1/tcp/5001"), ContentStore)


def test_unknown_cid_is_a_store_error(local: LocalStore) -> None:
    absent = cid_of(b"never stored")
    assert not local.has(absent)
    with pytest.raises(StoreError, match=f"{absent} is not in the local store"):
        local.get(absent)
    with pytest.raises(StoreError, match="cannot pin"):
        local.pin(absent)
    with pytest.raises(StoreError, match="not a CID"):
        local.get("not-a-cid")


@pytest.mark.parametrize("size", [1000, 3 * CHUNK_SIZE])
def test_corrupted_block_on_disk_is_detected(local: LocalStore, size: int) -> None:
    data = payload(size)
    cid = local.put(data)
    leaf = leaf_of(local, data)
    tampered = bytearray(leaf.read_bytes())
    tampered[0] ^= 1
    leaf.write_bytes(bytes(tampered))
    with pytest.raises(StoreError, match="corrupted"):
        local.get(cid)
    with pytest.raises(StoreError, match="corrupted"):
        local.export_car(cid)


def test_put_repairs_a_corrupted_block(local: LocalStore) -> None:
    data = payload(2 * CHUNK_SIZE)
    cid = local.put(data)
    leaf_of(local, data).write_bytes(b"garbage")
    local.put(data)
    assert local.get(cid) == data


def test_missing_leaf_means_not_held(local: LocalStore) -> None:
    data = payload(2 * CHUNK_SIZE)
    cid = local.put(data)
    leaf_of(local, data).unlink()
    assert not local.has(cid)
    with pytest.raises(StoreError, match="is not in the local store"):
        local.get(cid)


_WRITER = """
import random, sys
from pathlib import Path
from protocol.store import LocalStore
data = random.Random(int(sys.argv[2])).randbytes(int(sys.argv[3]))
print(LocalStore(Path(sys.argv[1])).put(data))
"""


def test_processes_writing_the_same_blocks_at_once(local: LocalStore) -> None:
    size = 4 * CHUNK_SIZE + 1
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(local.root), str(seed), str(size)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 1, 1, 2)
    ]
    cids = [writer.communicate(timeout=60)[0].strip() for writer in writers]
    assert all(writer.returncode == 0 for writer in writers)
    for seed, cid in zip((1, 1, 1, 2), cids, strict=True):
        assert local.get(cid) == random.Random(seed).randbytes(size)
    assert not [path for path in local.root.iterdir() if path.name.endswith(".tmp")]


def test_car_header_names_the_root(local: LocalStore, tmp_path: Path) -> None:
    cid = local.put(payload(2 * CHUNK_SIZE))
    car = tmp_path / "out.car"
    local.write_car(cid, car)
    assert aleph_cid.read_carv1_root(car) == cid
    assert car.read_bytes() == local.export_car(cid)


# open_store and addresses


def test_open_store_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LETHE_STORE", raising=False)
    default = open_store(data_dir=tmp_path)
    assert isinstance(default, LocalStore)
    assert default.root == tmp_path / ".lethe" / "blocks"
    monkeypatch.setenv("LETHE_STORE", str(tmp_path / "elsewhere"))
    chosen = open_store()
    assert isinstance(chosen, LocalStore)
    assert chosen.root == tmp_path / "elsewhere"
    monkeypatch.setenv("LETHE_STORE", "/ip4/127.0.0.1/tcp/5001")
    assert isinstance(open_store(), KuboStore)
    assert isinstance(open_store(str(tmp_path / "explicit")), LocalStore)


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
        ("/ip4/10.0.0.2/tcp/5001/http", "http://10.0.0.2:5001"),
        ("/dns4/ipfs/tcp/5001", "http://ipfs:5001"),
        ("/ip6/::1/tcp/5001", "http://[::1]:5001"),
        ("http://localhost:5001/", "http://localhost:5001"),
    ],
)
def test_api_addresses(address: str, url: str) -> None:
    assert api_url(address) == url


@pytest.mark.parametrize(
    "address", ["/ip4/127.0.0.1/udp/5001", "/ip4/127.0.0.1", "/dns4/h/tcp/1/http/x", "http://h"]
)
def test_bad_api_address_is_a_store_error(address: str) -> None:
    with pytest.raises(StoreError, match="not an IPFS API address"):
        open_store(address)


# Kubo RPC API, against a real js-ipfs daemon


@pytest.mark.parametrize("size", SIZES)
def test_kubo_cids_equal_local_cids(kubo: KuboStore, local: LocalStore, size: int) -> None:
    data = payload(size)
    cid = kubo.put(data)
    assert cid == local.put(data)
    assert kubo.get(cid) == data
    assert kubo.has(cid)
    assert kubo.pinned(cid)


def test_kubo_two_level_dag_equals_local(kubo: KuboStore, local: LocalStore) -> None:
    data = payload(175 * CHUNK_SIZE + 3)
    cid = kubo.put(data)
    assert cid == local.put(data)
    assert kubo.get(cid) == data


def test_kubo_pin_keeps_unpinned_content(kubo: KuboStore, ipfs_daemon: IpfsDaemon) -> None:
    data = payload(777)
    added = requests.post(
        f"{ipfs_daemon.url}/api/v0/add",
        params={"cid-version": "1", "raw-leaves": "true", "cid-base": "base32", "pin": "false"},
        files={"file": ("x", data, "application/octet-stream")},
        timeout=10,
    ).json()["Hash"]
    assert not kubo.pinned(added)
    kubo.pin(added)
    assert kubo.pinned(added)


def test_kubo_unknown_cid_fails_within_the_timeout(ipfs_daemon: IpfsDaemon) -> None:
    store = KuboStore(ipfs_daemon.api, timeout=1.0, lookup_timeout=0.5)
    absent = cid_of(b"nobody added this")
    started = time.monotonic()
    assert not store.has(absent)
    with pytest.raises(StoreError, match=ipfs_daemon.api):
        store.get(absent)
    assert time.monotonic() - started < 5


def test_kubo_get_rejects_bytes_that_do_not_match(kubo: KuboStore, ipfs_daemon: IpfsDaemon) -> None:
    data = payload(5000)
    cid = kubo.put(data)
    blocks = [path for path in (ipfs_daemon.repo / "blocks").rglob("*.data")]
    target = next(path for path in blocks if path.read_bytes() == data)
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(StoreError, match="do not hash to it"):
        kubo.get(cid)


def test_kubo_daemon_down_names_the_address(dead_api: str) -> None:
    store = KuboStore(dead_api, timeout=2)
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"IPFS API at {dead_api} is unreachable"):
        store.put(b"x")
    with pytest.raises(StoreError, match=dead_api):
        store.get(cid_of(b"x"))
    assert time.monotonic() - started < 4


def test_kubo_hung_daemon_times_out(silent_api: str) -> None:
    store = KuboStore(silent_api, timeout=1)
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"IPFS API at {silent_api} did not answer"):
        store.put(b"x")
    with pytest.raises(StoreError, match=f"IPFS API at {silent_api} did not answer"):
        store.has(cid_of(b"x"))
    assert time.monotonic() - started < 6


@pytest.mark.parametrize("size", [1000, 5 * CHUNK_SIZE + 7])
def test_car_export_imports_into_ipfs_under_the_same_cid(
    local: LocalStore, ipfs_daemon: IpfsDaemon, kubo: KuboStore, size: int
) -> None:
    data = payload(size) + b"car"
    cid = local.put(data)
    response = requests.post(
        f"{ipfs_daemon.url}/api/v0/dag/import",
        files={"file": ("dag.car", local.export_car(cid), "application/vnd.ipld.car")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    roots = [json.loads(line)["Root"]["Cid"]["/"] for line in response.text.splitlines()]
    assert [cid_of(data)] == [str(root) for root in roots]
    assert kubo.get(cid) == data
