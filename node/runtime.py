"""A node's run-time identity and connections: its SQLite store, keys, chain and content store.

Everything a ClientApp message needs is named by one JSON file (``node.json``) that the
SuperNode passes in ``--node-config lethe-config=PATH``; no state lives in the ClientApp
process itself, so a message may be handled by a fresh process or by the warm worker,
which merely caches the opened handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from node.store import NodeError
from protocol.files import JsonConfig

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from node.round_state import RoundState
    from node.sisa import SisaNode
    from protocol.commitments import RecordKey
    from protocol.ledger import Ledger
    from protocol.store import ContentStore

CONFIG_KEY = "lethe-config"


@dataclass(frozen=True)
class NodeRunConfig(JsonConfig):
    """Where a node's data and keys are, and which chain, contract and store it uses."""

    ERROR: ClassVar[type[Exception]] = NodeError
    WHAT: ClassVar[str] = "node config"

    federation_id: str
    name: str
    db: str
    eth_key_file: str
    x25519_key_file: str
    rpc_url: str
    contract: str
    store: str
    deployment_block: int = 0
    record_key_file: str = ""
    """The federation's record key (``protocol.commitments.RecordKey``), shared with the
    coordinator: keys the record commitments this node announces and checks on chain."""


class NodeRuntime:
    """Lazily opened handles for one node; cheap to create, cached by the warm worker."""

    def __init__(self, config: NodeRunConfig) -> None:
        self.config = config

    @cached_property
    def eth_key(self) -> str:
        """The node's Ethereum private key (hex): signs transactions, leaves, certificates."""
        return Path(self.config.eth_key_file).read_text().strip()

    @cached_property
    def address(self) -> str:
        """The node's checksummed Ethereum address."""
        from eth_account import Account

        return str(Account.from_key(self.eth_key).address)

    @cached_property
    def x25519_key(self) -> X25519PrivateKey:
        """The node's X25519 key: receives secret shares."""
        from protocol.envelope import load_private_key

        return load_private_key(Path(self.config.x25519_key_file).read_bytes())

    @cached_property
    def public_key(self) -> bytes:
        """Raw 32-byte X25519 public key, as registered on chain."""
        from protocol.envelope import public_key_bytes

        return public_key_bytes(self.x25519_key)

    @cached_property
    def record_key(self) -> RecordKey:
        """The federation's record key: commitments are keyed with it."""
        from protocol.commitments import RecordKey

        return RecordKey.load(self.config.record_key_file, self.config.federation_id)

    @cached_property
    def ledger(self) -> Ledger:
        """The Lethe contract, signing with the node's own key."""
        from protocol.ledger import Ledger

        return Ledger(
            self.config.rpc_url,
            self.config.contract,
            private_key=self.eth_key,
            deployment_block=self.config.deployment_block,
        )

    @cached_property
    def store(self) -> ContentStore:
        """Where certificates are put and global models are fetched."""
        from protocol.store import open_store

        return open_store(self.config.store)

    @cached_property
    def rounds(self) -> RoundState:
        """What this node shared, agreed and summed in each round (in its own SQLite file)."""
        from node.round_state import RoundState

        return RoundState(self.config.db, self.config.contract)

    def sisa(self) -> SisaNode:
        """Open the node's SISA store (completing any forget a crash interrupted)."""
        from node.sisa import SisaNode

        return SisaNode.open(self.config.db)


_RUNTIMES: dict[str, NodeRuntime] = {}


def runtime_for(config_path: str) -> NodeRuntime:
    """The runtime named by ``config_path``, cached per process."""
    if not config_path:
        raise NodeError(f"the SuperNode was started without --node-config {CONFIG_KEY}=PATH")
    if config_path not in _RUNTIMES:
        _RUNTIMES[config_path] = NodeRuntime(NodeRunConfig.load(config_path))
    return _RUNTIMES[config_path]
