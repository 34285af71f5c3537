"""`lethe cid` and `lethe store`: CIDs, round trips, CAR export, clear errors and exit codes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aleph_cid
import pytest
from click.testing import CliRunner, Result

from protocol.cid import cid_of
from verifier.cli import main

if TYPE_CHECKING:
    from tests.ipfs_daemon import IpfsDaemon

pytest_plugins = ["tests.ipfs_daemon"]

VECTORS = json.loads((Path(__file__).parent / "fixtures" / "cid_vectors.json").read_text())


def lethe(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], env=env)


@pytest.fixture(autouse=True)
def no_store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the caller's LETHE_* settings and working directory out of the tests."""
    monkeypatch.delenv("LETHE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)


def test_cid_prints_the_reference_cid_without_storing(tmp_path: Path) -> None:
    case = next(case for case in VECTORS["vectors"] if case["name"] == "one chunk plus one byte")
    source = tmp_path / "input.bin"
    source.write_bytes(hashlib.shake_256(VECTORS["seed"].encode()).digest(case["size"]))
    result = lethe("cid", source)
    assert result.exit_code == 0, result.output
    assert result.output == case["cid"] + "\n"
    assert not (tmp_path / ".lethe").exists()


def test_put_get_round_trip_in_the_local_store(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(bytes(range(256)) * 3000)
    put = lethe("store", "put", source)
    assert put.exit_code == 0, put.output
    cid = put.output.strip()
    assert cid == cid_of(source.read_bytes())
    assert (tmp_path / ".lethe" / "blocks" / cid).is_file()
    out = tmp_path / "back.bin"
    assert lethe("store", "get", cid, "-o", out).exit_code == 0
    assert out.read_bytes() == source.read_bytes()
    assert lethe("store", "get", cid).stdout_bytes == source.read_bytes()


def test_store_folder_from_option_and_environment(tmp_path: Path) -> None:
    source = tmp_path / "cert.json"
    source.write_bytes(b'{"certificate": 1}')
    cid = lethe("store", "put", "--store", tmp_path / "a", source).output.strip()
    assert (tmp_path / "a" / cid).is_file()
    found = lethe("store", "get", cid, env={"LETHE_STORE": str(tmp_path / "a")})
    assert found.stdout_bytes == source.read_bytes()


def test_unknown_cid_exits_1_with_a_message(tmp_path: Path) -> None:
    absent = cid_of(b"absent")
    result = lethe("store", "get", absent, "--store", tmp_path / "empty")
    assert result.exit_code == 1
    assert f"Error: {absent} is not in the local store" in result.output
    assert isinstance(result.exception, SystemExit)


def test_installed_command_reports_errors_without_traceback(tmp_path: Path) -> None:
    lethe_bin = Path(sys.executable).with_name("lethe")
    done = subprocess.run(
        [str(lethe_bin), "store", "get", "not-a-cid", "--store", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Error: not a CID: 'not-a-cid'" in done.stderr
    assert "Traceback" not in done.stderr


def test_export_car_names_the_root(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"lethe" * 100_000)
    cid = lethe("store", "put", source).output.strip()
    car = tmp_path / "data.car"
    result = lethe("store", "export-car", cid, "-o", car)
    assert result.exit_code == 0, result.output
    assert aleph_cid.read_carv1_root(car) == cid


def test_put_through_an_ipfs_node_gives_the_local_cid(
    ipfs_daemon: IpfsDaemon, tmp_path: Path
) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"federated" * 80_000)
    result = lethe("store", "put", source, env={"LETHE_STORE": ipfs_daemon.api})
    assert result.exit_code == 0, result.output
    assert result.output == lethe("cid", source).output
    assert (
        lethe("store", "get", result.output.strip(), "--store", ipfs_daemon.api).stdout_bytes
        == source.read_bytes()
    )
    refused = lethe(
        "store",
        "export-car",
        result.output.strip(),
        "-o",
        tmp_path / "x.car",
        "--store",
        ipfs_daemon.api,
    )
    assert refused.exit_code == 1
    assert "ipfs dag export" in refused.output


def test_daemon_down_exits_1_naming_the_address(dead_api: str, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"x")
    result = lethe("store", "put", source, "--store", dead_api, "--timeout", "2")
    assert result.exit_code == 1
    assert f"IPFS API at {dead_api} is unreachable" in result.output
