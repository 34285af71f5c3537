"""A whole federation in one process: a real chain, SISA nodes and the in-memory transport.

Load with ``pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]``. The
nodes' data is built and trained once per session and copied for each test, so a test
pays only for its contract and its rounds. Each node is a :class:`NodeHandle` whose
``endpoint`` answers the in-memory transport; tests wrap it to drop or forge replies.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.queue import CoordinatorDB
from coordinator.rounds import Coordinator
from coordinator.transport import InMemoryTransport, NodeEndpoint
from launcher.devnet import Devnet
from node.runtime import NodeRunConfig, NodeRuntime
from node.stages import answer
from protocol.commitments import RecordKey
from protocol.envelope import generate_private_key, private_key_bytes
from protocol.files import write_secret
from protocol.messages import WireRecord
from protocol.store import LocalStore
from tests.node_fixtures import build_node, make_records, small_config

if TYPE_CHECKING:
    from tests.chain_fixtures import Federation, StartFederation

FEDERATION_ID = "fed-test"
RECORD_KEY = RecordKey(FEDERATION_ID, bytes(range(100, 132)))
"""The federation's record key, shared by the coordinator and the nodes."""
NODES = 3
MAX_NODES = 4
"""``memory_federation_of(4)`` runs four nodes (three survivors of one failure)."""
RECORDS_PER_NODE = 24


@dataclass
class NodeHandle:
    """One in-process node: its runtime and what the transport calls for it."""

    flower_id: int
    runtime: NodeRuntime
    endpoint: NodeEndpoint
    seen: list[tuple[str, WireRecord]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.runtime.address


@dataclass
class MemoryFederation:
    """Chain, store, nodes and a coordinator wired through an :class:`InMemoryTransport`."""

    federation_id: str
    chain: Federation
    nodes: list[NodeHandle]
    transport: InMemoryTransport
    coordinator: Coordinator
    db: CoordinatorDB
    store: LocalStore
    lines: list[str]
    record_key: RecordKey = RECORD_KEY
    joiner: Callable[[int], NodeHandle] | None = None

    def admit(self, index: int) -> NodeHandle:
        """Admit node ``index`` (up to ``MAX_NODES - 1``) on chain now: it registers its key,
        brings its trained store, and connects to the transport, as a newcomer does."""
        assert self.joiner is not None
        node = self.joiner(index)
        self.nodes.append(node)
        self.transport.nodes[node.flower_id] = node.endpoint
        return node

    def commitment(self, record_id: str) -> str:
        """The record's commitment under the federation's record key (what the API computes)."""
        return self.record_key.commitment_hex(record_id)

    def replace(
        self, index: int, endpoint: Callable[[NodeHandle, str, WireRecord], WireRecord]
    ) -> None:
        """Answer for node ``index`` with ``endpoint(node, stage, record)`` from now on."""
        node = self.nodes[index]
        self.transport.nodes[node.flower_id] = lambda stage, record: endpoint(node, stage, record)


@pytest.fixture(scope="session")
def node_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained SISA stores for every node, built once."""
    root = tmp_path_factory.mktemp("node-template")
    for i in range(MAX_NODES):
        config = small_config(federation_id=FEDERATION_ID, node_id=f"node-{i}", epochs=4)
        build_node(
            root / f"node-{i}.sqlite", make_records(RECORDS_PER_NODE, f"n{i}"), config
        ).close()
    return root


def _node(tmp: Path, index: int, template: Path, chain: Federation, devnet: Devnet) -> NodeHandle:
    home = tmp / f"node-{index}"
    home.mkdir()
    write_secret(home / "record.key", RECORD_KEY.key.hex().encode())
    shutil.copy(template / f"node-{index}.sqlite", home / "node.sqlite")
    write_secret(home / "eth.key", devnet.accounts[2 + index].private_key.encode())
    write_secret(home / "x25519.key", private_key_bytes(generate_private_key()))
    runtime = NodeRuntime(
        NodeRunConfig(
            federation_id=FEDERATION_ID,
            name=f"node-{index}",
            db=str(home / "node.sqlite"),
            eth_key_file=str(home / "eth.key"),
            x25519_key_file=str(home / "x25519.key"),
            rpc_url=devnet.rpc_url,
            contract=chain.deployment.address,
            store=str(tmp / "store"),
            deployment_block=chain.deployment.block_number,
            record_key_file=str(home / "record.key"),
        )
    )
    runtime.ledger.register_key(runtime.public_key)
    handle = NodeHandle(100 + index, runtime, lambda stage, record: answer(runtime, stage, record))

    def recording(stage: str, record: WireRecord) -> WireRecord:
        handle.seen.append((stage, record))
        return answer(runtime, stage, record)

    handle.endpoint = recording
    return handle


MakeFederation = Callable[[int], MemoryFederation]


@pytest.fixture
def memory_federation_of(
    tmp_path: Path, devnet: Devnet, start_federation: StartFederation, node_template: Path
) -> MakeFederation:
    """``make(n)``: a fresh contract, ``n`` registered nodes with data, a coordinator."""

    def make(count: int) -> MemoryFederation:
        chain = start_federation(devnet, count)
        nodes = [_node(tmp_path, i, node_template, chain, devnet) for i in range(count)]
        home = tmp_path / "coordinator"
        write_secret(home / "coordinator.key", devnet.accounts[1].private_key.encode())
        write_secret(home / "api.token", b"token")
        write_secret(home / "record.key", RECORD_KEY.key.hex().encode())
        config = CoordinatorConfig(
            federation_id=FEDERATION_ID,
            rpc_url=devnet.rpc_url,
            contract=chain.deployment.address,
            coordinator_key_file=str(home / "coordinator.key"),
            store=str(tmp_path / "store"),
            db=str(home / "coordinator.sqlite"),
            api_token_file=str(home / "api.token"),
            record_key_file=str(home / "record.key"),
            shards=2,
            slices=4,
            deployment_block=chain.deployment.block_number,
        )
        transport = InMemoryTransport({n.flower_id: n.endpoint for n in nodes})
        db = CoordinatorDB(Path(config.db))
        store = LocalStore(tmp_path / "store")
        lines: list[str] = []
        coordinator = Coordinator(
            config, transport, chain.coordinator, store, db, report=lines.append
        )
        coordinator.error_pause_s = 0.0

        def join(index: int) -> NodeHandle:
            chain.owner.admit_node(devnet.accounts[2 + index].address)
            return _node(tmp_path, index, node_template, chain, devnet)

        return MemoryFederation(
            FEDERATION_ID, chain, nodes, transport, coordinator, db, store, lines, joiner=join
        )

    return make


@pytest.fixture
def memory_federation(memory_federation_of: MakeFederation) -> MemoryFederation:
    """A fresh contract, three registered nodes with data, a coordinator; no round run yet."""
    return memory_federation_of(NODES)
