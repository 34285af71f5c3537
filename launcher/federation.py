"""A whole federation on one machine, from real parts: what `lethe demo` and the tests run.

anvil (dev chain) with the Lethe contract, one Flower SuperLink, one ``lethe-node run``
(SuperNode + warm ClientApp worker) per node with its own SQLite file and keys, the
coordinator's Flask API, and the ServerApp submitted with ``flwr run``. Every process is
on 127.0.0.1 and is stopped by :meth:`LocalFederation.stop`, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import requests

from coordinator.config import CoordinatorConfig
from coordinator.queue import CoordinatorDB
from infra.flower import SHORT_HEARTBEAT_S
from infra.net import free_port, port_open
from launcher.processes import Child, ProcessError, ProcessGroup
from node.runtime import NodeRunConfig
from node.supernode import DEFAULT_POLL_S
from protocol.federation import DEFAULT_SLICES
from protocol.files import write_secret
from protocol.hashing import keccak256

if TYPE_CHECKING:
    from node.store import Record

APP_DIR = Path(__file__).resolve().parent.parent
IDLE_PULLS_PER_S = 30.0
"""Idle pulls per second the SuperLink serves from all nodes together (3 nodes at 0.1 s)."""


def supernode_poll_s(nodes: int) -> float:
    """Each SuperNode's idle poll in a federation of ``nodes``: 0.1 s up to 3 nodes, then
    slower, so that idle pulls stay ~30 a second in all. Every pull is a SuperLink request
    (an idle 3-node federation keeps 0.7 core busy); at 0.1 s, 10 nodes starved a 2-core
    machine and their heartbeats arrived late."""
    return round(max(DEFAULT_POLL_S, nodes / IDLE_PULLS_PER_S), 3)


BIN = Path(sys.executable).parent
SUPERLINK_STATE = ":flwr-in-memory:"
"""The local SuperLink's ``--database``: Flower's in-memory state (see ``_superlink``)."""


def predates_record_keys(workdir: Path) -> bool:
    """Whether ``workdir`` holds a federation made before the federation's record key."""
    return (workdir / "node-1" / "node.json").exists() and not (
        workdir / "coordinator" / "record.key"
    ).exists()


@dataclass(frozen=True)
class FederationSpec:
    """Size and data of a local federation; the defaults are the demo's."""

    nodes: int = 3
    slices: int = DEFAULT_SLICES
    records_per_node: int | None = 400
    test_records: int | None = 300
    federation_id: str = "lethe-demo"
    exclude_records: tuple[str, ...] = ()
    allowed_apps: tuple[str, ...] = ()
    staking: bool = True
    """A new contract gets DEV_STAKE_POLICY and DEV_REWARD_POOL; each node stakes to join."""


DEV_STAKE_POLICY = dict(
    required_stake=10**18,  # 1 ETH of the dev accounts' 10,000
    slash_amount=10**18 // 4,
    reward_per_round=10**16,  # 0.01 ETH per finalized round to each node that approved it
    forget_deadline_blocks=200,  # a secure round mines about 5 blocks on anvil
    unstake_delay_blocks=200,
)
DEV_REWARD_POOL = 10**18


@dataclass
class NodeHandle:
    """One started node: its config, data and process."""

    index: int
    address: str
    config_path: Path
    config: NodeRunConfig
    child: Child | None = None
    metrics_port: int = 0
    """Where its ``/metrics`` are served on 127.0.0.1 (chosen at its first start)."""


class LocalFederation:
    """Sets up and runs a federation under ``workdir``; reuses what a previous run left."""

    def __init__(
        self,
        workdir: Path,
        spec: FederationSpec | None = None,
        *,
        report: Callable[[str], None] = print,
        api_port: int = 0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.api_port = api_port  # 0: any free port
        self.spec = spec or FederationSpec()
        self.report = report
        self.group = ProcessGroup(self.workdir / "logs")
        self.nodes: list[NodeHandle] = []
        self.devnet: Any = None
        self.api_url = ""
        self.superlink_address = ""
        self.flwr_home = self.workdir / "flwr"
        self.coordinator_config_path = self.workdir / "coordinator" / "coordinator.json"
        self.coordinator_config: CoordinatorConfig | None = None
        self.db: CoordinatorDB | None = None
        self.deployment: Any = None
        self._accounts: tuple[Any, tuple[Any, ...]] = (None, ())

    # -- set-up -------------------------------------------------------------------------

    def _chain(self) -> None:
        from launcher.devnet import DEV_ACCOUNT_COUNT, Devnet, dev_accounts
        from protocol.ledger import Deployment, Ledger, deploy

        chain_dir = self.workdir / "chain"
        chain_dir.mkdir(parents=True, exist_ok=True)
        self.devnet = Devnet(
            chain_dir / "anvil-state.json",
            log_file=chain_dir / "anvil.log",
            accounts=max(DEV_ACCOUNT_COUNT, self.spec.nodes + 2),  # owner, coordinator, nodes
        )
        self.devnet.start()
        accounts = dev_accounts(self.spec.nodes + 2)
        owner, coordinator, node_accounts = accounts[0], accounts[1], accounts[2:]
        deployment_file = chain_dir / "deployment.json"
        fresh = not deployment_file.exists()
        if not fresh:
            self.deployment = Deployment.load(deployment_file)
            if self.deployment.rpc_url != self.devnet.rpc_url:
                # federation.json is the record of where anvil runs now; this copy is kept
                # current for tools given only the deployment file (LETHE_DEPLOYMENT)
                self.deployment = replace(self.deployment, rpc_url=self.devnet.rpc_url)
                self.deployment.save(deployment_file)
        else:
            self.deployment = deploy(
                self.devnet.rpc_url, owner.private_key, coordinator=coordinator.address
            )
            self.deployment.save(deployment_file)
            self.report(
                f"contract deployed at {self.deployment.address} (tx {self.deployment.tx_hash})"
            )
        ledger = Ledger(
            self.devnet.rpc_url,
            self.deployment.address,
            private_key=owner.private_key,
            deployment_block=self.deployment.block_number,
        )
        if fresh and self.spec.staking:
            self._stake_policy(ledger)
        for account in node_accounts:
            if not ledger.is_node(account.address):
                if self.staking:
                    self._stake(ledger.with_account(account.private_key))
                ledger.admit_node(account.address)
        self._accounts = (coordinator, node_accounts)

    @property
    def staking(self) -> bool:
        """Whether the contract has stakes: one deployed before they existed has not."""
        from protocol.ledger import load_artifact

        current = self.deployment.abi_keccak256 == load_artifact().abi_keccak256
        return bool(self.spec.staking and current)

    def _stake_policy(self, ledger: Any) -> None:
        from protocol.ledger import StakePolicy
        from protocol.stakes import format_ether

        policy = StakePolicy(**DEV_STAKE_POLICY)
        ledger.set_stake_policy(policy)
        ledger.fund(DEV_REWARD_POOL)
        self.report(
            f"stake to join {format_ether(policy.required_stake)}, reward "
            f"{format_ether(policy.reward_per_round)} per approved round, forget deadline "
            f"{policy.forget_deadline_blocks} blocks (slash {format_ether(policy.slash_amount)}); "
            f"reward pool funded with {format_ether(DEV_REWARD_POOL)}"
        )

    def _stake(self, node: Any) -> None:
        """Stake what the policy asks of a node about to be admitted (with its own key)."""
        missing = node.stake_policy().required_stake - node.stake_of(node.account).amount
        if missing > 0:
            node.stake(missing)

    def stakes(self) -> Any:
        """Everyone's stake, rewards and slashes, from the chain's events."""
        from protocol.ledger import Ledger
        from protocol.stakes import read_stake_ledger

        ledger = Ledger(
            self.devnet.rpc_url,
            self.deployment.address,
            deployment_block=self.deployment.block_number,
        )
        return read_stake_ledger(ledger)

    def claim_rewards(self, index: int) -> Any:
        """Node ``index`` claims its rewards with its own key, as `lethe-node claim` does;
        returns the transaction, or None when there was nothing to claim."""
        from node.runtime import NodeRuntime

        ledger = NodeRuntime(self.nodes[index].config).ledger
        rounds = self.stakes().node(self.nodes[index].address).claimable_rounds
        return ledger.claim_rewards(rounds) if rounds else None

    def _test_embeddings(self) -> Callable[[Sequence[str]], npt.NDArray[np.float32]]:
        """Embed the shared test split once for all nodes (it is the same texts)."""
        cache: dict[str, npt.NDArray[np.float32]] = {}

        def embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
            from protocol.features import encode

            missing = [t for t in texts if t not in cache]
            if missing:
                for text, row in zip(missing, encode(missing, progress=True), strict=True):
                    cache[text] = row
            return np.stack([cache[t] for t in texts])

        return embed

    def _node(
        self,
        index: int,
        account: Any,
        embed_test: Callable[[Sequence[str]], npt.NDArray[np.float32]],
        records: Sequence[Record] | None = None,
    ) -> None:
        from node.sisa import SisaNode
        from node.store import NodeConfig, load_default
        from protocol.envelope import generate_private_key, private_key_bytes, public_key_bytes
        from protocol.ledger import Ledger

        spec = self.spec
        home = self.workdir / f"node-{index}"
        config_path = home / "node.json"
        db = home / "node.sqlite"
        if not config_path.exists():
            write_secret(home / "eth.key", account.private_key.encode())
            write_secret(home / "x25519.key", private_key_bytes(generate_private_key()))
            node_config = NodeConfig(spec.federation_id, f"node-{index}", slices=spec.slices)
            data = load_default(
                (min(index, spec.nodes), spec.nodes),
                limit=spec.records_per_node,
                test_limit=spec.test_records,
            )
            chosen = data.train if records is None else records
            train = [r for r in chosen if r.id not in spec.exclude_records]
            self.report(f"node-{index}: embedding {len(train)} records")
            with SisaNode.create(db, node_config) as node:
                node.ingest(train)
                node.ingest_test(data.test, embed=embed_test, progress=False)
            run_config = NodeRunConfig(
                federation_id=spec.federation_id,
                name=f"node-{index}",
                db=str(db),
                eth_key_file=str(home / "eth.key"),
                x25519_key_file=str(home / "x25519.key"),
                rpc_url=self.devnet.rpc_url,
                contract=self.deployment.address,
                store=str(self.workdir / "store"),
                deployment_block=self.deployment.block_number,
            )
            run_config.save(config_path)
        run_config = NodeRunConfig.load(config_path)
        record_key = str(self._record_key(home))
        if (run_config.rpc_url, run_config.record_key_file) != (self.devnet.rpc_url, record_key):
            # anvil restarted on another port, or a work directory from before record keys
            run_config = NodeRunConfig(
                **{
                    **run_config.__dict__,
                    "rpc_url": self.devnet.rpc_url,
                    "record_key_file": record_key,
                }
            )
            run_config.save(config_path)
        from node.runtime import NodeRuntime

        runtime = NodeRuntime(run_config)
        ledger = Ledger(run_config.rpc_url, run_config.contract, private_key=runtime.eth_key)
        public = public_key_bytes(runtime.x25519_key)
        if ledger.node_key(runtime.address) != public:
            tx = ledger.register_key(public)
            self.report(f"node-{index}: share key registered on chain (tx {tx.tx_hash})")
        self.nodes.append(NodeHandle(index, runtime.address, config_path, run_config))

    def _record_key(self, home: Path) -> Path:
        """``home``'s copy of the federation's record key, made once in the work directory
        and copied to the coordinator's and each node's folder (each machine its own file)."""
        from protocol.commitments import RecordKey

        master = self.workdir / "coordinator" / "record.key"
        if not master.exists():
            write_secret(master, RecordKey.generate())
        copy = home / "record.key"
        if not copy.exists():
            write_secret(copy, master.read_bytes())
        return copy

    def _coordinator_config(self) -> None:
        home = self.workdir / "coordinator"
        coordinator, _ = self._accounts
        if not (home / "api.token").exists():
            write_secret(home / "coordinator.key", coordinator.private_key.encode())
            write_secret(home / "api.token", secrets.token_urlsafe(24).encode())
        self.coordinator_config = CoordinatorConfig(
            federation_id=self.spec.federation_id,
            rpc_url=self.devnet.rpc_url,
            contract=self.deployment.address,
            coordinator_key_file=str(home / "coordinator.key"),
            store=str(self.workdir / "store"),
            db=str(home / "coordinator.sqlite"),
            api_token_file=str(home / "api.token"),
            record_key_file=str(self._record_key(home)),
            slices=self.spec.slices,
            min_nodes=2,
            deployment_block=self.deployment.block_number,
        )
        self.coordinator_config.save(self.coordinator_config_path)
        self.db = CoordinatorDB(Path(self.coordinator_config.db))

    def prepare(self) -> None:
        """Chain, contract, node data and keys, configs: everything before any Flower process."""
        if predates_record_keys(self.workdir):
            raise ProcessError(
                f"{self.workdir} was made before record commitments were keyed: its "
                "coordinator indexes unkeyed commitments; start a new work directory "
                "(`lethe demo --fresh`, or another --workdir)"
            )
        self._record_key(self.workdir / "coordinator")  # made before any node's config
        self._chain()
        embed_test = self._test_embeddings()
        _, node_accounts = self._accounts
        for index, account in enumerate(node_accounts, start=1):
            self._node(index, account, embed_test)
        self._coordinator_config()

    def admit_node(self) -> NodeHandle:
        """Admit one more organisation to the running federation, as its owner would: the
        next dev account stakes and is admitted on chain, gets default-dataset records no
        other node holds, registers its share key, and its SuperNode connects. The next
        round (a new roster epoch, docs/rounds.md) asks it in."""
        from launcher.devnet import DEV_ACCOUNT_COUNT, dev_accounts
        from node.store import load_default
        from protocol.ledger import Ledger

        index = len(self.nodes) + 1
        if index + 2 > DEV_ACCOUNT_COUNT:
            raise ProcessError(f"no funded dev account left for node-{index}")
        accounts = dev_accounts(index + 2)
        owner, account = accounts[0], accounts[index + 1]
        ledger = Ledger(
            self.devnet.rpc_url,
            self.deployment.address,
            private_key=owner.private_key,
            deployment_block=self.deployment.block_number,
        )
        if not ledger.is_node(account.address):
            if self.staking:
                self._stake(ledger.with_account(account.private_key))
            ledger.admit_node(account.address)
        held = {
            r.id
            for i in range(1, self.spec.nodes + 1)
            for r in load_default((i, self.spec.nodes), limit=self.spec.records_per_node).train
        }
        pool = [r for r in load_default().train if r.id not in held]
        ranked = sorted(pool, key=lambda r: keccak256(b"lethe.newcomer.v1\x00" + r.id.encode()))
        records = ranked[: self.spec.records_per_node or len(pool) // self.spec.nodes]
        self._node(index, account, self._test_embeddings(), records)
        node = self.nodes[-1]
        self.start_node(node)
        self.report(f"node-{index}: admitted on chain and started ({node.address})")
        return node

    # -- processes ----------------------------------------------------------------------

    def _superlink(self) -> None:
        port = free_port()
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.superlink_address = f"127.0.0.1:{port}"
        (self.flwr_home / "config.toml").write_text(
            '[superlink]\ndefault = "lethe"\n\n[superlink.lethe]\n'
            f'address = "{self.superlink_address}"\ninsecure = true\n'
        )
        child = self.group.start(
            "superlink",
            [
                sys.executable,
                "-m",
                "coordinator.superlink",  # flower-superlink, allowing 1 s heartbeats
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                # Flower's in-memory state, not its SQLite file: with the file, SQL took
                # most of the SuperLink's CPU and a round ~7.5 s instead of ~4.5 s
                # (docs/rounds.md "Where a round's time goes"). Nothing in it needs to
                # outlive a crash here: nodes register again (no SuperNode auth keys in
                # a local federation), the ServerApp is submitted again and resumes from
                # the coordinator's database.
                "--database",
                SUPERLINK_STATE,
            ],
            env=_env(FLWR_HOME=str(self.flwr_home)),
        )
        self.group.wait_until(child, lambda: port_open(port), timeout=60, what="SuperLink port")

    def start_node(
        self, node: NodeHandle, *, command: Sequence[str] = (str(BIN / "lethe-node"),)
    ) -> None:
        """Start (or restart) one node's SuperNode and worker (``command run …``)."""
        node.metrics_port = node.metrics_port or free_port()
        node.child = self.group.start(
            node.config.name,
            [
                *command,
                "run",
                "--config",
                str(node.config_path),
                "--superlink",
                self.superlink_address,
                "--insecure",
                "--metrics-port",
                str(node.metrics_port),
                *[arg for app in self.spec.allowed_apps for arg in ("--allow-app", app)],
            ],
            env=_env(
                FLWR_HOME=str(self.workdir / node.config.name / "flwr"),
                LETHE_SUPERNODE_HEARTBEAT_S=str(SHORT_HEARTBEAT_S),
                LETHE_SUPERNODE_POLL_S=str(supernode_poll_s(self.spec.nodes)),
            ),
        )

    def _api(self) -> None:
        port = self.api_port or free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        child = self.group.start(
            "api",
            [
                str(BIN / "lethe"),
                "api",
                "--config",
                str(self.coordinator_config_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
        )
        self.group.wait_until(child, lambda: port_open(port), timeout=60, what="API port")

    def submit_run(self) -> None:
        """Submit the coordinator's ServerApp to the SuperLink (``flwr run``)."""
        result = subprocess.run(
            [
                str(BIN / "flwr"),
                "run",
                str(APP_DIR),
                "lethe",
                "--format",
                "json",
                "--run-config",
                f'coordinator-config="{self.coordinator_config_path}"',
            ],
            env=_env(FLWR_HOME=str(self.flwr_home)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ProcessError(f"flwr run failed:\n{result.stdout}\n{result.stderr}")
        self.report("ServerApp submitted to the SuperLink")

    def restart_child(self, child: Child) -> None:
        """Start a crashed child again and wait until it serves (the supervisor's call)."""
        self.group.restart(child)
        if child.name == "superlink":
            port = int(self.superlink_address.rsplit(":", 1)[1])
            self.group.wait_until(child, lambda: port_open(port), timeout=60, what="SuperLink port")
        elif child.name == "api":
            port = int(self.api_url.rsplit(":", 1)[1])
            self.group.wait_until(child, lambda: port_open(port), timeout=60, what="API port")

    def start(self) -> None:
        """Start SuperLink, nodes, API and the ServerApp."""
        assert self.db is not None, "call prepare() first"
        self.db.set_control("stop", "0")
        self.db.set_control("stopped", "0")
        self._superlink()
        for node in self.nodes:
            self.start_node(node)
        self._api()
        self.submit_run()
        # Where everything runs, for `lethe forget/status/rounds/audit` without flags.
        (self.workdir / "federation.json").write_text(describe(self) + "\n")

    def up(self) -> None:
        """prepare() then start(); stops everything if any step fails."""
        try:
            self.prepare()
            self.start()
        except BaseException:
            self.stop()
            raise

    # -- use ----------------------------------------------------------------------------

    def api_token(self) -> str:
        """The bearer token of the coordinator API."""
        assert self.coordinator_config is not None
        return self.coordinator_config.api_token()

    def wait_rounds(
        self,
        count: int,
        timeout: float = 600.0,
        on_round: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` rounds are finalized, calling ``on_round`` for each new one."""
        assert self.db is not None
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rounds = [r for r in self.db.list_rounds() if r["state"] == "finalized"]
            for r in rounds:
                if r["round"] not in seen:
                    seen.add(r["round"])
                    if on_round:
                        on_round(r)
            if len(rounds) >= count:
                return rounds
            self._check_alive()
            time.sleep(0.3)
        raise ProcessError(
            f"fewer than {count} rounds finalized within {timeout:.0f} s; see {self.group.log_dir}"
        )

    def forget(self, record_id: str, request_id: str | None = None) -> dict[str, Any]:
        """POST /forget over HTTP, as a data subject's agent would."""
        body: dict[str, Any] = {"record_id": record_id}
        if request_id:
            body["request_id"] = request_id
        res = requests.post(
            f"{self.api_url}/forget",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {self.api_token()}"},
        )
        if res.status_code not in (200, 202):
            raise ProcessError(f"POST /forget → {res.status_code}: {res.text}")
        return dict(res.json())

    def receipt(self, request_id: str) -> dict[str, Any]:
        """GET /forget/<id>/receipt with the token: what the data subject checks with."""
        res = requests.get(
            f"{self.api_url}/forget/{request_id}/receipt",
            timeout=10,
            headers={"Authorization": f"Bearer {self.api_token()}"},
        )
        if res.status_code != 200:
            raise ProcessError(f"GET /forget/{request_id}/receipt → {res.status_code}: {res.text}")
        return dict(res.json())

    def follow(
        self,
        request_id: str,
        timeout: float = 300.0,
        on_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll GET /forget/<id> until completed or failed."""
        last = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = requests.get(f"{self.api_url}/forget/{request_id}", timeout=10).json()
            if state["state"] != last:
                last = state["state"]
                if on_state:
                    on_state(state)
            if state["state"] in ("completed", "failed"):
                return dict(state)
            self._check_alive()
            time.sleep(0.2)
        raise ProcessError(f"request {request_id} not done within {timeout:.0f} s")

    def _check_alive(self) -> None:
        for child in self.group.children:
            code = None if child.stopped else child.popen.poll()
            # A node SIGKILLed on purpose (fault drills) is a dropout; anything else a failure.
            if code is not None and (child.name in ("superlink", "api") or code >= 0):
                raise ProcessError(f"{child.name} exited with code {code}; see {child.log}")

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the ServerApp to stop, then stop every process this federation started."""
        if self.db is not None and self.group.children:
            self.db.set_control("stop", "1")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.db.get_control("stopped") != "1":
                if not any(c.name == "superlink" and c.alive() for c in self.group.children):
                    break
                time.sleep(0.2)
        self.group.stop_all()
        if self.devnet is not None:
            self.devnet.stop()
            self.devnet = None


def _env(**extra: str) -> dict[str, str]:
    """This environment, with this interpreter's bin directory first on PATH.

    Flower's SuperLink starts ``flower-superexec`` and ``flwr-serverapp`` by name.
    """
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def describe(federation: LocalFederation) -> str:
    """A JSON summary of where everything runs (for `lethe up`)."""
    return json.dumps(
        {
            "rpc_url": federation.devnet.rpc_url if federation.devnet else None,
            "contract": federation.deployment.address if federation.deployment else None,
            "superlink": federation.superlink_address,
            "api": federation.api_url,
            "store": str(federation.workdir / "store"),
            "nodes": [
                {
                    "name": n.config.name,
                    "address": n.address,
                    "metrics": f"http://127.0.0.1:{n.metrics_port}/metrics",
                }
                for n in federation.nodes
            ],
        },
        indent=2,
    )
