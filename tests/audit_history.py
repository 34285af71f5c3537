"""Real federation histories for the audit tests: SISA nodes, a local store, rounds and forgets
on anvil, recorded exactly as the federation records them; plus a contract without guards.

A round: the global model (``model_bytes`` of the sample-weighted average of the node
models) and the manifest go to the store, the coordinator proposes with their CIDs, the
model's keccak256 and the manifest's updates root, and nodes approve with their own keys.
A forget: the coordinator requests it (keccak256 of the request id string, the record
commitment), the node forgets for real, stores its signed certificate and certifies; a
later finalized round carrying the node's new model completes it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account

from bench.verify import Sender, masked_round
from node.sisa import NodeModel, SisaNode, assign, evaluate
from node.store import NodeConfig, Record
from protocol.approvals import RoundApproval
from protocol.certificate import Certificate
from protocol.commitments import RecordKey, Update
from protocol.envelope import public_key_bytes
from protocol.hashing import keccak256
from protocol.ledger import Ledger
from protocol.manifest import NodeUpdate, RoundManifest
from protocol.merkle import EMPTY_ROOT
from protocol.model import model_bytes
from protocol.recompute import Transcript
from protocol.records_root import RecordsRoot
from protocol.secure_sum import Roster
from protocol.store import LocalStore
from protocol.typed_data import Domain

if TYPE_CHECKING:
    import numpy.typing as npt

    from launcher.devnet import Devnet
    from tests.chain_fixtures import Federation

FED_ID = "fed-audit"
RECORD_KEY = RecordKey(FED_ID, bytes(range(7, 39)))
LABELS = ("negative", "neutral", "positive")
DIM = 384
SLICES = 4
UNGUARDED_SOURCE = Path(__file__).parent / "contracts" / "UnguardedLethe.sol"


def copy_store(source: Path, target: Path) -> LocalStore:
    """A private copy of a blockstore, safe to corrupt."""
    shutil.copytree(source, target)
    return LocalStore(target)


def synthetic_embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Embeddings that depend on each text alone: its label's centroid plus seeded noise."""
    centroids = np.random.default_rng(7).normal(size=(len(LABELS), DIM))
    rows = []
    for text in texts:
        label = LABELS.index(text.split()[0])
        noise = np.random.default_rng(int.from_bytes(keccak256(text.encode())[:8], "big"))
        rows.append(centroids[label] + 6.0 * noise.normal(size=DIM))
    return np.asarray(rows, dtype=np.float32)


def make_records(prefix: str, start: int, count: int) -> list[Record]:
    """``count`` labelled records whose text starts with their label."""
    return [
        Record(f"{prefix}-r{j}", f"{LABELS[j % 3]} note {j} from {prefix}", LABELS[j % 3])
        for j in range(start, start + count)
    ]


@dataclass(frozen=True)
class Contribution:
    """One node's model in a round, and the key that signs its update."""

    address: str
    private_key: str
    vector: npt.NDArray[np.float32]
    n_samples: int
    slice_roots: tuple[bytes, ...] = (EMPTY_ROOT,) * SLICES


@dataclass(frozen=True)
class PublishedRound:
    """What ``proposeRound`` takes, and the manifest behind it."""

    round: int
    model_hash: bytes
    model_cid: str
    updates_root: bytes
    manifest_cid: str
    manifest: RoundManifest
    global_vector: npt.NDArray[np.float32]


def publish_round(
    store: LocalStore,
    round_no: int,
    contributions: Sequence[Contribution],
    *,
    domain: Domain,
    edit: Callable[[RoundManifest], RoundManifest] | None = None,
) -> PublishedRound:
    """Store a round's global model and manifest as the coordinator does; updates are signed
    for the deployment ``domain``."""
    ordered = sorted(contributions, key=lambda c: c.address.lower())
    transcript, vector, roster = secure_sum_of(round_no, ordered)
    model = model_bytes(vector)
    model_cid = store.put(model)
    updates = []
    for c in ordered:
        digest = keccak256(model_bytes(c.vector))
        update = Update(FED_ID, round_no, c.address, digest, c.n_samples, c.slice_roots)
        updates.append(
            NodeUpdate(
                c.address,
                "0x" + digest.hex(),
                c.n_samples,
                update.sign(domain, c.private_key),
                ["0x" + r.hex() for r in c.slice_roots],
            )
        )
    addresses = [c.address for c in ordered]
    manifest = RoundManifest(
        federation_id=FED_ID,
        round=round_no,
        threshold=roster.threshold,
        roster=[
            {"address": m.node_id, "x": m.x, "public_key": "0x" + m.public_key.hex()}
            for m in roster.members
        ],
        updates=updates,
        responders={"train": addresses, "share": addresses, "aggregate": addresses},
        dropped=[],
        global_model_cid=model_cid,
        global_model_hash="0x" + keccak256(model).hex(),
        n_total=sum(c.n_samples for c in ordered),
        fixed_point={"prime": 2**31 - 1, "fraction_bits": 16},
        transcript=transcript.to_json(),
    )
    if edit is not None:
        manifest = edit(manifest)
    return PublishedRound(
        round=round_no,
        model_hash=keccak256(model),
        model_cid=model_cid,
        updates_root=manifest.updates_root(),
        manifest_cid=store.put(manifest.to_bytes()),
        manifest=manifest,
        global_vector=vector,
    )


def x25519_key(address: str) -> X25519PrivateKey:
    """A node's X25519 key in these histories: fixed by its address, registered on chain."""
    return X25519PrivateKey.from_private_bytes(keccak256(b"x25519 " + address.encode()))


def secure_sum_of(
    round_no: int, ordered: Sequence[Contribution]
) -> tuple[Transcript, npt.NDArray[np.float32], Roster]:
    """The round as nodes run it (``bench.verify.masked_round``); the global model is what
    anyone recomputes from the transcript."""
    senders = [
        Sender(
            c.address,
            c.private_key,
            x25519_key(c.address),
            np.asarray(c.vector, dtype=np.float64),
            c.n_samples,
        )
        for c in ordered
    ]
    return masked_round(FED_ID, round_no, senders)


def drop_update(address: str) -> Callable[[RoundManifest], RoundManifest]:
    """Manifest edit: leave one responder's update out (its model stays in the aggregate)."""

    def edit(manifest: RoundManifest) -> RoundManifest:
        kept = [u for u in manifest.updates if u.address != address]
        return replace(manifest, updates=kept, n_total=sum(u.n_samples for u in kept))

    return edit


class History:
    """A federation on anvil with real SISA nodes, driven round by round."""

    def __init__(self, fed: Federation, devnet: Devnet, store: LocalStore, workdir: Path) -> None:
        self.fed = fed
        self.store = store
        keys = {a.address: a.private_key for a in devnet.accounts}
        self.keys = [keys[str(n.account)] for n in fed.nodes]
        self.addresses = fed.node_addresses
        self.nodes: list[SisaNode] = []
        self.ingested: list[int] = []
        for i, address in enumerate(self.addresses):
            config = NodeConfig(FED_ID, node_id=address, slices=SLICES, epochs=4)
            node = SisaNode.create(workdir / f"node-{i}.sqlite", config)
            node.ingest(make_records(f"n{i}", 0, 16), embed=synthetic_embed, progress=False)
            node.train()
            self.nodes.append(node)
            self.ingested.append(16)
            fed.nodes[i].register_key(public_key_bytes(x25519_key(address)))
        self.committed: dict[int, tuple[NodeModel, tuple[bytes, ...]]] = {}
        self.rounds: list[PublishedRound] = []
        self.accuracy: dict[int, float] = {}
        self.request_ids: dict[str, bytes] = {}
        self.forgotten: set[str] = set()
        self.certificates: dict[str, tuple[Certificate, str]] = {}
        tests = make_records("test", 0, 30)
        self.test_x = synthetic_embed([r.text for r in tests])
        self.test_y = np.array([LABELS.index(r.label) for r in tests])

    def run_round(
        self,
        *,
        grow: bool = False,
        stale: Collection[int] = (),
        approvers: Sequence[int] | None = None,
        edit: Callable[[RoundManifest], RoundManifest] | None = None,
        signed: bool = False,
    ) -> PublishedRound:
        """One round: ``grow`` ingests new records first, ``stale`` nodes commit their last
        round's model, ``approvers`` (default all) approve: each in its own transaction, or
        with ``signed`` by EIP-712 signatures carried in the proposal's transaction."""
        round_no = len(self.rounds) + 1
        contributions = []
        for i, node in enumerate(self.nodes):
            if i in stale:
                model, roots = self.committed[i]
            else:
                if grow:
                    fresh = make_records(f"n{i}", self.ingested[i], 4)
                    node.ingest(fresh, embed=synthetic_embed, progress=False)
                    self.ingested[i] += 4
                    node.train()
                model, roots = node.model(), tuple(node.slice_roots())
            self.committed[i] = (model, roots)
            contributions.append(
                Contribution(self.addresses[i], self.keys[i], model.vector, model.n_samples, roots)
            )
        published = publish_round(
            self.store, round_no, contributions, domain=Domain.of(self.fed.owner), edit=edit
        )
        content = (
            round_no,
            published.model_hash,
            published.model_cid,
            published.updates_root,
            published.manifest_cid,
        )
        chosen = range(len(self.nodes)) if approvers is None else approvers
        if signed:
            approval = RoundApproval(*content)
            domain = Domain.of(self.fed.owner)
            self.fed.coordinator.propose_round_signed(
                *content, {self.addresses[i]: approval.sign(domain, self.keys[i]) for i in chosen}
            )
        else:
            self.fed.coordinator.propose_round(*content)
            for i in chosen:
                self.fed.nodes[i].approve_round(
                    round_no, published.model_hash, published.updates_root
                )
        self.rounds.append(published)
        self.accuracy[round_no] = evaluate(published.global_vector, self.test_x, self.test_y)
        return published

    def forgettable_record(self, node: int) -> str:
        """A record of ``node`` in a middle slice, so the retrain is partial."""
        for j in range(self.ingested[node]):
            record_id = f"n{node}-r{j}"
            if record_id not in self.forgotten and assign(record_id, FED_ID, 1, SLICES)[1] == 2:
                return record_id
        raise AssertionError("no record in the middle slice")

    def forget(
        self,
        node: int,
        request_id: str,
        *,
        sign_with: str | None = None,
        edit: Callable[[Certificate], Certificate] | None = None,
        domain: Domain | None = None,
    ) -> str:
        """Request, forget for real and certify; return the certificate's CID.

        ``edit`` changes the certificate before the node signs it (a lying node)."""
        record_id = self.forgettable_record(node)
        self.forgotten.add(record_id)
        on_chain = keccak256(request_id.encode())
        self.request_ids[request_id] = on_chain
        commitment = RECORD_KEY.commitment(record_id)
        held = [RECORD_KEY.commitment(r) for r in self.nodes[node].store.record_ids()]
        committed = RecordsRoot.of(
            self.fed.owner.last_round(),  # finalized: the node's root as of it
            held,
            self.fed.owner.certifications_of(self.addresses[node]),
        )
        signature = committed.sign(Domain.of(self.fed.owner), self.keys[node])
        self.fed.coordinator.request_forget(
            on_chain, commitment, self.addresses[node], committed.proof(commitment, signature)
        )
        result = self.nodes[node].forget([record_id], request_ids=[request_id])
        cert = result.certificate(request_id)
        if edit is not None:
            cert = edit(cert)
        cert = cert.signed(sign_with or self.keys[node], domain or Domain.of(self.fed.owner))
        cid = self.store.put(cert.to_bytes())
        self.fed.nodes[node].certify_forget(
            on_chain, cid, bytes.fromhex(cert.model_hash_after.removeprefix("0x"))
        )
        self.certificates[request_id] = (cert, cid)
        return cid

    def complete(self, request_id: str, round_no: int) -> None:
        """The coordinator closes a certified request with a finalized round."""
        self.fed.coordinator.complete_forget(self.request_ids[request_id], round_no)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def build_correct_history(history: History) -> None:
    """Two rounds, a forget on node 1, the round carrying its retrained model completes it,
    and a last round still waiting for its quorum."""
    history.run_round()
    history.run_round(grow=True)
    history.forget(1, "forget-001")
    history.run_round()
    history.complete("forget-001", 3)
    history.run_round(approvers=[0])


# ----- a contract without guards --------------------------------------------------------------


@cache
def unguarded_artifact() -> dict[str, Any]:
    """tests/contracts/UnguardedLethe.sol, built by the project's own solc-js path."""
    from coordinator.contract_build import compile_contract

    artifact: dict[str, Any] = json.loads(
        compile_contract(UNGUARDED_SOURCE.read_text(encoding="utf-8")).artifact
    )
    return artifact


class UnguardedLethe:
    """A deployed UnguardedLethe: any history of Lethe events, written by one dev account."""

    def __init__(self, devnet: Devnet, *, account: int = 8) -> None:
        from web3 import Web3

        artifact = unguarded_artifact()
        self._w3 = Web3(Web3.HTTPProvider(devnet.rpc_url))
        self._account = Account.from_key(devnet.accounts[account].private_key)
        factory = self._w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self._send(factory.constructor())
        self.address = str(receipt["contractAddress"])
        self.deployment_block = int(receipt["blockNumber"])
        self._contract = self._w3.eth.contract(
            address=Web3.to_checksum_address(self.address), abi=artifact["abi"]
        )
        self.ledger = Ledger(devnet.rpc_url, self.address, deployment_block=self.deployment_block)

    def _send(self, call: Any) -> Any:
        tx = call.build_transaction(
            {
                "from": self._account.address,
                "nonce": self._w3.eth.get_transaction_count(self._account.address, "pending"),
            }
        )
        signed = self._account.sign_transaction(tx)
        tx_hash = self._w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self._w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
        assert receipt["status"] == 1
        return receipt

    def emit(self, function: str, *args: Any) -> str:
        """Emit one event through its same-named function; return the tx hash."""
        receipt = self._send(self._contract.functions[function](*args))
        return "0x" + bytes(receipt["transactionHash"]).hex()
