"""The local dev chain: anvil from node_modules on 127.0.0.1, with a state file that keeps history.

The state file is a crash-safe snapshot written by Lethe, never by anvil
(``launcher.chain_snapshots`` says why).

Everything here is for development only. The accounts come from anvil's well-known public
test mnemonic: anyone can sign with them, so they must never hold value or be used on any
chain but a local dev chain (``lethe deploy`` refuses them elsewhere).
"""

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import requests

from launcher.chain_snapshots import SnapshotError, SnapshotWatcher, usable
from protocol.errors import LedgerError

REPO_ROOT = Path(__file__).resolve().parent.parent
ANVIL_ENV = "LETHE_ANVIL"
ANVIL_BIN = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
# DEV ONLY: anvil's public default mnemonic. Its keys are printed in every Foundry tutorial.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_CHAIN_ID = 31337
DEV_ACCOUNT_COUNT = 10
DEFAULT_STATE_FILE = Path(".lethe") / "chain" / "anvil-state.json"
_LISTENING = re.compile(r"Listening on (\S+):(\d+)")


class DevnetError(LedgerError):
    """The dev chain could not start, or is not reachable."""


@dataclass(frozen=True)
class DevAccount:
    """A DEV-ONLY account derived from :data:`DEV_MNEMONIC`."""

    index: int
    address: str
    private_key: str


@cache
def dev_accounts(count: int = DEV_ACCOUNT_COUNT) -> tuple[DevAccount, ...]:
    """The first ``count`` DEV-ONLY accounts, the same ones anvil funds at start."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    accounts = []
    for i in range(count):
        acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        accounts.append(
            DevAccount(index=i, address=acct.address, private_key="0x" + acct.key.hex())
        )
    return tuple(accounts)


def is_dev_key(private_key: str | bytes) -> bool:
    """Whether ``private_key`` is one of the public DEV-ONLY keys."""
    from eth_account import Account

    address = Account.from_key(private_key).address
    return any(a.address == address for a in dev_accounts())


def anvil_binary() -> Path:
    """Path of the anvil executable: ``$LETHE_ANVIL`` or the pinned npm platform package."""
    override = os.environ.get(ANVIL_ENV)
    path = Path(override) if override else ANVIL_BIN
    if not path.is_file():
        if override:
            raise DevnetError(f"{ANVIL_ENV}={override} does not exist")
        raise DevnetError(
            f"anvil not found at {path.relative_to(REPO_ROOT)}; run `make setup` "
            "(installs the pinned @foundry-rs/anvil-linux-amd64 into node_modules)"
        )
    return path


def rpc_ready(rpc_url: str, timeout: float = 1.0) -> bool:
    """Whether a JSON-RPC endpoint answers ``eth_chainId``."""
    try:
        reply = requests.post(
            rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            timeout=timeout,
        )
        return reply.ok and "result" in reply.json()
    except (requests.RequestException, ValueError):
        return False


class Devnet:
    """An anvil process on 127.0.0.1, started and stopped by this object.

    ``port=0`` lets anvil pick a free port (read back from its log). With ``state_file``
    the chain is loaded from the newest readable snapshot there and snapshotted again each
    time its head moves (checked every ``snapshot_poll_s``) and on stop, so a restart keeps
    blocks, receipts and events, and a kill loses at most the blocks of the last poll.
    """

    def __init__(
        self,
        state_file: Path | None = None,
        *,
        port: int = 0,
        chain_id: int = DEV_CHAIN_ID,
        accounts: int = DEV_ACCOUNT_COUNT,
        snapshot_poll_s: float = 0.2,
        log_file: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.state_file = state_file
        self.port = port
        self.chain_id = chain_id
        self.account_count = accounts
        self.snapshot_poll_s = snapshot_poll_s
        self._snapshots: SnapshotWatcher | None = None
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0
        self._rpc_url: str | None = None

    @property
    def rpc_url(self) -> str:
        if self._rpc_url is None:
            raise DevnetError("the devnet is not running")
        return self._rpc_url

    @property
    def accounts(self) -> tuple[DevAccount, ...]:
        """The DEV-ONLY funded accounts."""
        return dev_accounts(self.account_count)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The anvil command line this devnet runs."""
        cmd = [
            str(anvil_binary()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.account_count),
            "--mnemonic", DEV_MNEMONIC,
        ]  # fmt: skip
        if self.state_file is not None:
            try:
                snapshot = usable(self.state_file)
            except SnapshotError as exc:
                raise DevnetError(f"{exc}; refusing to start an empty chain in its place") from exc
            if snapshot is not None:
                cmd += ["--load-state", str(snapshot)]
        return cmd

    def start(self) -> Self:
        """Start anvil and return once it answers JSON-RPC."""
        if self.running():
            return self
        cmd = self.command()
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            # Appended to: the log of a run that crashed is what explains the crash.
            self._log = self.log_file.open("a+b")
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._log.seek(0, os.SEEK_END)
        self._log_start = self._log.tell()
        # Own session: a Ctrl-C meant for our process must not kill anvil before stop()
        # has taken the last snapshot of the chain.
        self._process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._rpc_url = self._wait_listening()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        # A restart (the supervisor's, after a crash) must come back where clients look.
        self.port = int(self._rpc_url.rsplit(":", 1)[1])
        if self.state_file is not None:
            self._snapshots = SnapshotWatcher(
                self.rpc_url, self.state_file, poll_s=self.snapshot_poll_s
            ).start()
        return self

    def _read_log(self) -> str:
        assert self._log is not None
        self._log.seek(self._log_start)
        return self._log.read().decode(errors="replace")

    def _wait_listening(self) -> str:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self._read_log())
            if match:
                return f"http://{match.group(1)}:{match.group(2)}"
            if self._process.poll() is not None:
                tail = self._read_log()[-2000:]
                raise DevnetError(f"anvil exited with code {self._process.returncode}:\n{tail}")
            time.sleep(0.05)
        raise DevnetError(f"anvil did not start listening within {self.startup_timeout:.0f} s")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if rpc_ready(self.rpc_url):
                return
            time.sleep(0.05)
        raise DevnetError(
            f"anvil at {self.rpc_url} did not answer within {self.startup_timeout:.0f} s"
        )

    def wait(self) -> int:
        """Block until anvil exits (foreground use); return its exit code."""
        if self._process is None:
            raise DevnetError("the devnet is not running")
        return self._process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """Take a last snapshot of the chain, then stop anvil."""
        snapshots, self._snapshots = self._snapshots, None
        if snapshots is not None:
            snapshots.stop(final=self.running())
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._rpc_url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def describe(self) -> dict[str, object]:
        """What other processes need to use this devnet (written to ``devnet.json``)."""
        return {
            "rpc_url": self.rpc_url,
            "chain_id": self.chain_id,
            "pid": self.pid,
            "state_file": None if self.state_file is None else str(self.state_file),
        }


def save_devnet_info(devnet: Devnet, path: Path) -> None:
    """Record a running devnet's URL so ``lethe deploy`` / ``lethe admit`` find it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(devnet.describe(), indent=2) + "\n", encoding="utf-8")
