"""A real IPFS daemon for the tests: js-ipfs, offline, loopback only, one per session.

No Kubo binary can be installed here, but js-ipfs (npm ``ipfs``) speaks the same
RPC API. Load with ``pytest_plugins = ["tests.ipfs_daemon"]`` (import names from
here only under ``TYPE_CHECKING``, so pytest imports the module itself) and ask
for the ``ipfs_daemon`` fixture; the plugin is registered once, so every module
shares the daemon. ``dead_api`` and ``silent_api`` stand for a daemon that is
down and one that accepts connections but never answers.
"""

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from infra.net import free_port
from tests.conftest import NODE_BIN

JSIPFS = NODE_BIN / "jsipfs"
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class IpfsDaemon:
    """Where the running daemon listens and keeps its repository."""

    api: str
    url: str
    repo: Path
    log: Path


def _configure(repo: Path, api_port: int) -> None:
    """Loopback API only: no swarm, gateway, gRPC, bootstrap peers or discovery."""
    path = repo / "config"
    config = json.loads(path.read_text())
    config["Bootstrap"] = []
    config["Addresses"].update(
        Swarm=[], API=f"/ip4/127.0.0.1/tcp/{api_port}", Gateway="", RPC="", Delegates=[]
    )
    config["Discovery"]["MDNS"]["Enabled"] = False
    config["Discovery"]["webRTCStar"]["Enabled"] = False
    path.write_text(json.dumps(config, indent=2))


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"js-ipfs daemon exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.post(f"{url}/api/v0/version", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"js-ipfs daemon not ready after {START_TIMEOUT:g} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def ipfs_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsDaemon]:
    """Start ``jsipfs daemon --offline`` in a fresh repository; kill its process group after."""
    if not JSIPFS.exists():
        pytest.fail(f"js-ipfs is not installed ({JSIPFS} is missing): run `make setup`")
    base = tmp_path_factory.mktemp("ipfs")
    repo, log = base / "repo", base / "daemon.log"
    env = {**os.environ, "IPFS_PATH": str(repo)}
    init = subprocess.run(
        [str(JSIPFS), "init", "--emptyRepo"], env=env, capture_output=True, timeout=120
    )
    if init.returncode != 0:
        pytest.fail(f"jsipfs init failed:\n{init.stdout.decode()}{init.stderr.decode()}")
    port = free_port()
    _configure(repo, port)
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [str(JSIPFS), "daemon", "--offline", "--enable-preload=false"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield IpfsDaemon(api=f"/ip4/127.0.0.1/tcp/{port}", url=url, repo=repo, log=log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def dead_api() -> str:
    """An API address on 127.0.0.1 where nothing listens."""
    return f"/ip4/127.0.0.1/tcp/{free_port()}"


@pytest.fixture
def silent_api() -> Iterator[str]:
    """An API address whose socket accepts connections but never replies."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}"
