"""Client of the Lethe contract: typed calls, decoded reverts, safe nonces, chunked event reads.

The only module of ``protocol`` that talks to a chain. web3 is imported when a ``Ledger`` is
built, not when this module is imported, so modules that merely name these types stay fast.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache, cached_property, partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from protocol.canonical import canonical_json
from protocol.errors import LedgerError
from protocol.files import JsonConfig
from protocol.hashing import keccak256

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from hexbytes import HexBytes
    from web3 import Web3
    from web3.contract import Contract
    from web3.types import Nonce, TxParams, TxReceipt, Wei

    from protocol.records_root import RecordsProof

RPC_URL_ENV = "LETHE_RPC_URL"
DEPLOYMENT_ENV = "LETHE_DEPLOYMENT"
CONTRACT_ENV = "LETHE_CONTRACT"
PRIVATE_KEY_ENV = "LETHE_PRIVATE_KEY"
DEFAULT_DEPLOYMENT_FILE = Path(".lethe") / "chain" / "deployment.json"
# anvil answers a 2,000-block eth_getLogs in ~0.4 s; public RPCs commonly cap ranges near this.
LOG_CHUNK_BLOCKS = 2000

T = TypeVar("T")


class ContractRevert(LedgerError):
    """The contract rejected a call; ``error_name`` is its custom error (``None`` if unknown)."""

    def __init__(
        self,
        message: str,
        *,
        error_name: str | None,
        error_args: dict[str, Any] | None = None,
        tx_hash: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.error_args = dict(error_args or {})
        self.tx_hash = tx_hash


class ForgetState(IntEnum):
    """Lifecycle of a forget request, as the contract's ``ForgetState`` enum."""

    NONE = 0
    REQUESTED = 1
    CERTIFIED = 2
    COMPLETED = 3


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction: what the audit trail and the benchmarks need."""

    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class RoundState:
    """A round's on-chain state; ``quorum == 0`` means the round was never proposed."""

    quorum: int
    approvals: int
    finalized: bool

    @property
    def proposed(self) -> bool:
        return self.quorum != 0


@dataclass(frozen=True)
class ForgetStatus:
    """A forget request's on-chain state; ``node`` is the certifying node once certified."""

    state: ForgetState
    node: str | None
    after_round: int


@dataclass(frozen=True)
class StakePolicy:
    """The owner's staking terms (amounts in wei, windows in blocks); all 0 = switched off."""

    required_stake: int
    slash_amount: int
    reward_per_round: int
    forget_deadline_blocks: int
    unstake_delay_blocks: int


@dataclass(frozen=True)
class StakeStatus:
    """A node's stake in wei, its unlock block (0: staying) and answerable open requests."""

    amount: int
    unlock_block: int
    open_forgets: int


@dataclass(frozen=True)
class RoundProposal:
    """What the coordinator proposed for a round (its ``RoundProposed`` event)."""

    round: int
    global_model_hash: bytes
    global_model_cid: str
    updates_root: bytes
    manifest_cid: str


@dataclass(frozen=True)
class ForgetRequestEvent:
    """A forget request as opened on chain: the record's commitment and the node named."""

    request_id: bytes
    record_commitment: bytes
    node: str
    label: str = ""
    """The request id's preimage, when the coordinator gave it (see ``request_forget``)."""
    block_number: int = field(default=0, compare=False)


@dataclass(frozen=True)
class RosterEntry:
    """An admitted node and its X25519 public key (``None`` until registered)."""

    address: str
    key: bytes | None


@dataclass(frozen=True)
class LedgerEvent:
    """One decoded contract event, with where it happened."""

    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class Artifact:
    """The committed build of the contract (contracts/build/Lethe.json)."""

    abi: list[dict[str, Any]]
    bytecode: str
    compiler: str

    @property
    def abi_keccak256(self) -> str:
        return "0x" + keccak256(canonical_json(self.abi)).hex()


@dataclass(frozen=True)
class Deployment(JsonConfig):
    """Where a Lethe contract lives; saved as JSON so every process can find it.

    Public facts only (no key), so the file is world-readable: every role's process,
    container or auditor reads the same one.
    """

    ERROR: ClassVar[type[Exception]] = LedgerError
    WHAT: ClassVar[str] = "deployment file"
    MODE: ClassVar[int] = 0o644
    MISSING_HINT: ClassVar[str] = "run `lethe deploy` first"

    chain_id: int
    address: str
    block_number: int
    tx_hash: str
    deployer: str
    abi_keccak256: str
    compiler: str
    rpc_url: str


@cache
def load_artifact() -> Artifact:
    """Return the committed ABI and bytecode (cached: the file never changes at run time)."""
    text = (resources.files("contracts") / "build" / "Lethe.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return Artifact(
        abi=data["abi"], bytecode=data["bytecode"], compiler=data["compiler"]["version"]
    )


@dataclass
class _NonceSlot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_nonce: int | None = None


# One slot per (endpoint, chain, account) for the whole process: two Ledger objects signing
# with the same key must not hand out the same nonce, while different accounts proceed in
# parallel. The endpoint is part of the key because two local dev chains share a chain id.
_NONCES: dict[tuple[str, int, str], _NonceSlot] = {}
_NONCES_LOCK = threading.Lock()


def _nonce_slot(rpc_url: str, chain_id: int, address: str) -> _NonceSlot:
    with _NONCES_LOCK:
        return _NONCES.setdefault((rpc_url, chain_id, address), _NonceSlot())


def _connect(rpc_url: str, timeout: float) -> Web3:
    import requests
    from web3 import HTTPProvider, Web3
    from web3.middleware import ExtraDataToPOAMiddleware
    from web3.providers.rpc.utils import ExceptionRetryConfiguration
    from web3.types import RPCEndpoint

    # Few, short retries: an unreachable endpoint must fail in seconds, not hang.
    retry = ExceptionRetryConfiguration(
        errors=(ConnectionError, requests.ConnectionError, requests.Timeout),
        retries=3,
        backoff_factor=0.1,
    )
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": (min(timeout, 3.0), timeout)},
        exception_retry_configuration=retry,
        # web3's validation asks eth_chainId before every call and transaction; an
        # endpoint's chain id never changes, so it is asked once.
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    w3 = Web3(provider)
    # Proof-of-authority chains put long extraData in blocks; harmless elsewhere.
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def rpc_chain_id(rpc_url: str, *, timeout: float = 5.0) -> int:
    """Chain id served at ``rpc_url``; LedgerError naming the URL if it does not answer."""
    w3 = _connect(rpc_url, timeout)
    with _rpc_errors(rpc_url, "eth_chainId"):
        return int(w3.eth.chain_id)


@contextmanager
def _rpc_errors(rpc_url: str, action: str) -> Iterator[None]:
    """Turn transport and node errors into LedgerError naming the endpoint."""
    import requests
    from web3.exceptions import Web3Exception

    try:
        yield
    except LedgerError:
        raise
    except requests.RequestException as exc:
        raise LedgerError(
            f"cannot reach the Ethereum JSON-RPC at {rpc_url} ({action}): {exc}"
        ) from exc
    except (Web3Exception, OSError) as exc:
        raise LedgerError(f"{action} failed at {rpc_url}: {exc}") from exc


def _hex(value: bytes | str) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


def _bytes32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {value!r}")
    return bytes(value)


class _ErrorDecoder:
    """Maps revert data to the contract's custom error (4-byte selector → name and args)."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for item in abi:
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                signature = f"{item['name']}({','.join(types)})"
                names = [i["name"] for i in item["inputs"]]
                self._errors[keccak256(signature.encode())[:4]] = (item["name"], types, names)

    def decode(self, data: bytes) -> tuple[str | None, dict[str, Any]]:
        from eth_abi.abi import decode
        from eth_utils.address import to_checksum_address

        entry = self._errors.get(data[:4])
        if entry is None:
            return None, {}
        name, types, names = entry
        try:
            values = decode(types, data[4:])
        except Exception:
            return name, {}
        return name, {
            n: to_checksum_address(v) if t == "address" else v
            for n, t, v in zip(names, types, values, strict=True)
        }


def _revert_data(exc: Exception) -> bytes | None:
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


class Ledger:
    """The Lethe contract at ``address`` on the chain behind ``rpc_url``.

    With ``private_key`` the ledger can send transactions from that account; without, it
    reads only. Write methods block until the receipt and return a :class:`TxResult`;
    reverts raise :class:`ContractRevert` carrying the contract's error name.
    """

    def __init__(
        self,
        rpc_url: str,
        address: str,
        *,
        private_key: str | bytes | None = None,
        deployment_block: int = 0,
        timeout: float = 10.0,
        receipt_timeout: float = 120.0,
    ) -> None:
        from web3 import Web3

        if not Web3.is_address(address):
            raise ValueError(f"not an Ethereum address: {address!r}")
        self.rpc_url = rpc_url
        self.address = Web3.to_checksum_address(address)
        self.deployment_block = deployment_block
        self._receipt_timeout = receipt_timeout
        self._w3 = _connect(rpc_url, timeout)
        artifact = load_artifact()
        self._contract: Contract = self._w3.eth.contract(address=self.address, abi=artifact.abi)
        self._errors = _ErrorDecoder(artifact.abi)
        self._account: LocalAccount | None = None
        if private_key is not None:
            from eth_account import Account

            self._account = Account.from_key(private_key)
        self._chain_id: int | None = None

    # ----- construction ------------------------------------------------------------------

    @classmethod
    def from_deployment(
        cls,
        deployment: Deployment | Path,
        *,
        rpc_url: str | None = None,
        private_key: str | bytes | None = None,
        timeout: float = 10.0,
    ) -> Ledger:
        """Connect to a deployment, checking the endpoint serves that chain and contract."""
        if isinstance(deployment, Path):
            deployment = Deployment.load(deployment)
        ledger = cls(
            rpc_url or deployment.rpc_url,
            deployment.address,
            private_key=private_key,
            deployment_block=deployment.block_number,
            timeout=timeout,
        )
        if ledger.chain_id != deployment.chain_id:
            raise LedgerError(
                f"{ledger.rpc_url} serves chain {ledger.chain_id}, "
                f"but the deployment is on chain {deployment.chain_id}"
            )
        ledger.check_deployed()
        return ledger

    @classmethod
    def from_env(cls, *, private_key: str | bytes | None = None, timeout: float = 10.0) -> Ledger:
        """Connect as configured by the environment.

        ``LETHE_RPC_URL`` overrides the endpoint; ``LETHE_CONTRACT`` names the contract
        directly, otherwise ``LETHE_DEPLOYMENT`` (default ``.lethe/chain/deployment.json``)
        is read; ``LETHE_PRIVATE_KEY`` is the signing key when ``private_key`` is not given.
        """
        rpc_url = os.environ.get(RPC_URL_ENV) or None
        key = private_key if private_key is not None else os.environ.get(PRIVATE_KEY_ENV) or None
        address = os.environ.get(CONTRACT_ENV)
        if address:
            if rpc_url is None:
                raise LedgerError(f"{CONTRACT_ENV} is set but {RPC_URL_ENV} is not")
            ledger = cls(rpc_url, address, private_key=key, timeout=timeout)
            ledger.check_deployed()
            ledger.deployment_block = ledger.deployed_block()
            return ledger
        path = Path(os.environ.get(DEPLOYMENT_ENV) or DEFAULT_DEPLOYMENT_FILE)
        return cls.from_deployment(path, rpc_url=rpc_url, private_key=key, timeout=timeout)

    def with_account(self, private_key: str | bytes) -> Ledger:
        """The same contract and connection, signing with another key."""
        from eth_account import Account

        ledger = copy.copy(self)
        ledger._account = Account.from_key(private_key)
        return ledger

    @property
    def account(self) -> str | None:
        """Checksummed address of the signing account, ``None`` for a read-only ledger."""
        return None if self._account is None else str(self._account.address)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self._read(lambda: int(self._w3.eth.chain_id), "eth_chainId")
        return self._chain_id

    def check_deployed(self) -> None:
        """Raise LedgerError unless contract code exists at ``address``."""
        code = self._read(lambda: bytes(self._w3.eth.get_code(self.address)), "eth_getCode")
        if not code:
            raise LedgerError(f"no contract at {self.address} on {self.rpc_url}")

    # ----- writes ------------------------------------------------------------------------

    def admit_coordinator(self, account: str) -> TxResult:
        """Owner: make ``account`` the coordinator."""
        return self._transact("admitCoordinator", account)

    def admit_node(self, node: str) -> TxResult:
        """Owner: admit ``node`` to the federation."""
        return self._transact("admitNode", node)

    def remove_node(self, node: str) -> TxResult:
        """Owner: remove ``node`` (its past approvals stay on record)."""
        return self._transact("removeNode", node)

    def set_quorum(self, quorum: int) -> TxResult:
        """Owner: approvals a round needs from now on; 0 restores ⌈2n/3⌉."""
        return self._transact("setQuorum", quorum)

    def set_noise_scale(self, sigma: float) -> TxResult:
        """Owner: σ of the noise inside every later round's secure sum (model units)."""
        from protocol.noise import NOISE_MICROS

        return self._transact("setNoiseScale", round(sigma * NOISE_MICROS))

    def noise_scale(self) -> float:
        """σ of the noise the senders add inside the secure sum, as the chain holds it."""
        from protocol.noise import NOISE_MICROS

        return int(self._call("noiseScaleMicros")) / NOISE_MICROS

    def register_key(self, key: bytes) -> TxResult:
        """Node: publish (or rotate) its 32-byte X25519 public key."""
        return self._transact("registerKey", _bytes32(key, "X25519 public key"))

    def propose_round(
        self,
        round_number: int,
        global_model_hash: bytes,
        global_model_cid: str,
        updates_root: bytes,
        manifest_cid: str,
    ) -> TxResult:
        """Coordinator: propose a round's global model for approval."""
        return self._transact(
            "proposeRound",
            round_number,
            _bytes32(global_model_hash, "global model hash"),
            global_model_cid,
            _bytes32(updates_root, "updates root"),
            manifest_cid,
        )

    def propose_round_signed(
        self,
        round_number: int,
        global_model_hash: bytes,
        global_model_cid: str,
        updates_root: bytes,
        manifest_cid: str,
        signatures: Mapping[str, str],
    ) -> TxResult:
        """Coordinator: propose a round with the nodes' off-chain approvals, in one transaction.

        ``signatures`` maps each approving node to its 65-byte EIP-712 ``RoundApproval``
        signature (protocol.approvals); the contract reverts unless each is from that node,
        admitted now. The call lists every node ever admitted (by id), which the contract
        checks against its hash instead of reading storage per signer.
        """
        from protocol.approvals import compact

        ids = self.node_ids()
        index = {a.lower(): i + 1 for i, a in enumerate(ids)}
        unknown = [a for a in signatures if a.lower() not in index]
        if unknown:
            raise LedgerError(f"never admitted, cannot approve: {', '.join(unknown)}")
        ordered = sorted((index[a.lower()], s) for a, s in signatures.items())
        return self._transact(
            "proposeRoundSigned",
            round_number,
            _bytes32(global_model_hash, "global model hash"),
            global_model_cid,
            _bytes32(updates_root, "updates root"),
            manifest_cid,
            b"".join(bytes.fromhex(a[2:]) for a in ids),
            b"".join(i.to_bytes(2, "big") + compact(s) for i, s in ordered),
        )

    def approve_round_witnessed(self, proposal: RoundProposal) -> TxResult:
        """Node: approve a round proposed with signed approvals (``proposeRoundSigned``), which
        ``approve_round`` cannot (no stored hash to check): name its content and show one
        counted approver's signature over it, taken from the proposal's transaction."""
        witness = self.round_witness(proposal.round)
        if witness is None:
            raise LedgerError(f"round {proposal.round} carries no signed approval to show")
        return self._transact(
            "approveRoundWitnessed",
            proposal.round,
            _bytes32(proposal.global_model_hash, "global model hash"),
            proposal.global_model_cid,
            _bytes32(proposal.updates_root, "updates root"),
            proposal.manifest_cid,
            *witness,
        )

    def round_witness(self, round_number: int) -> tuple[str, bytes] | None:
        """The first signed approval of a round (its node, the EIP-2098 signature), read from
        the ``proposeRoundSigned`` transaction; ``None`` if the round carries none."""
        found = self._indexed_events("RoundApprovedBy", round_number.to_bytes(32, "big"))
        if not found or not found[0].args["nodes"]:
            return None
        tx = self._read(
            lambda: self._w3.eth.get_transaction(found[0].tx_hash),  # type: ignore[arg-type]
            "eth_getTransactionByHash",
        )
        _, args = self._contract.decode_function_input(tx["input"])
        approvals = bytes(args["approvals"])
        return str(found[0].args["nodes"][0]), approvals[2:66]

    def round_proposal_hash(self, round_number: int) -> bytes:
        """What ``approveRound`` checks (keccak256 of model hash and updates root); 32 zero
        bytes for a round proposed with signed approvals (or never proposed)."""
        return bytes(self._call("roundProposal", round_number))

    def node_ids(self) -> list[str]:
        """Every node ever admitted, in id order (the contract's ids 1, 2, …: first admissions).

        Read from ``NodeAdmitted`` events and checked against the contract's count.
        """
        ids: list[str] = []
        seen: set[str] = set()
        for event in self.events(["NodeAdmitted"]):
            node = str(event.args["node"])
            if node.lower() not in seen:
                seen.add(node.lower())
                ids.append(node)
        count = int(self._call("nodeIds"))
        if len(ids) != count:
            raise LedgerError(f"{len(ids)} nodes in NodeAdmitted events, the contract has {count}")
        return ids

    def approve_round(
        self, round_number: int, global_model_hash: bytes, updates_root: bytes
    ) -> TxResult:
        """Node: approve a proposed round (after checking it off-chain).

        The approval names the model hash and updates root the node checked; the contract
        reverts with ``ProposalMismatch`` unless they are the ones proposed.
        """
        return self._transact(
            "approveRound",
            round_number,
            _bytes32(global_model_hash, "global model hash"),
            _bytes32(updates_root, "updates root"),
        )

    def request_forget(
        self,
        request_id: bytes | str,
        record_commitment: bytes,
        node: str,
        committed: RecordsProof,
    ) -> TxResult:
        """Coordinator: open a forget request for a record held by admitted node ``node``;
        ``committed`` proves the node committed to it (``protocol.records_root``).

        Given as text, the request's id on chain is its keccak256 and the text goes in the
        ``ForgetRequested`` event, so the node can certify it from the chain alone."""
        label = request_id if isinstance(request_id, str) else ""
        chain_id = keccak256(label.encode()) if isinstance(request_id, str) else request_id
        return self._transact(
            "requestForget",
            _bytes32(chain_id, "request id"),
            _bytes32(record_commitment, "record commitment"),
            node,
            label,
            committed.abi(),
        )

    def certifications_of(self, node: str) -> int:
        """How many forget requests ``node`` certified: what its next records root names."""
        return int(self._call("certificationsOf", node))

    def certify_forget(
        self, request_id: bytes, certificate_cid: str, new_model_hash: bytes
    ) -> TxResult:
        """Node: certify it forgot the record; the certificate lives at ``certificate_cid``."""
        return self._transact(
            "certifyForget",
            _bytes32(request_id, "request id"),
            certificate_cid,
            _bytes32(new_model_hash, "new model hash"),
        )

    def complete_forget(self, request_id: bytes, round_number: int) -> TxResult:
        """Coordinator: close a certified request with the finalized round carrying the model."""
        return self._transact("completeForget", _bytes32(request_id, "request id"), round_number)

    # ----- stakes, rewards, slashing ------------------------------------------------------

    def set_stake_policy(self, policy: StakePolicy) -> TxResult:
        """Owner: the stake to join, slash, reward per round, deadline and unstake delay."""
        return self._transact(
            "setStakePolicy",
            policy.required_stake,
            policy.slash_amount,
            policy.reward_per_round,
            policy.forget_deadline_blocks,
            policy.unstake_delay_blocks,
        )

    def stake(self, amount_wei: int) -> TxResult:
        """Add ``amount_wei`` of the signer's ether to its stake."""
        return self._transact("stake", value=_positive_wei(amount_wei))

    def request_unstake(self) -> TxResult:
        """Node: start the unstake delay (it stays admitted and answerable meanwhile)."""
        return self._transact("requestUnstake")

    def withdraw_stake(self) -> TxResult:
        """Node: after the delay and with no open request, leave and take the stake back."""
        return self._transact("withdrawStake")

    def fund(self, amount_wei: int) -> TxResult:
        """Add ``amount_wei`` of the signer's ether to the reward pool."""
        return self._transact("fund", value=_positive_wei(amount_wei))

    def claim_rewards(self, rounds: Iterable[int]) -> TxResult:
        """Node: take the rewards of these finalized rounds it approved."""
        return self._transact("claimRewards", list(rounds))

    def slash(self, request_id: bytes) -> TxResult:
        """Anyone: slash the node that let ``request_id``'s forget deadline pass."""
        return self._transact("slash", _bytes32(request_id, "request id"))

    def stake_policy(self) -> StakePolicy:
        return StakePolicy(*(int(v) for v in self._call("stakePolicy")))

    def stake_of(self, node: str) -> StakeStatus:
        amount, unlock_block, open_forgets = self._call("stakeOf", node)
        return StakeStatus(int(amount), int(unlock_block), int(open_forgets))

    def reward_pool(self) -> int:
        return int(self._call("rewardPool"))

    def round_reward(self, round_number: int) -> int:
        """Wei each approver of ``round_number`` earns once it is finalized."""
        return int(self._call("roundReward", round_number))

    def reward_claimed(self, round_number: int, node: str) -> bool:
        return bool(self._call("rewardClaimed", round_number, node))

    def forget_deadline(self, request_id: bytes) -> tuple[int, bool]:
        """A request's deadline block (0: none) and whether its node was slashed."""
        deadline, slashed = self._call("forgetDeadline", _bytes32(request_id, "request id"))
        return int(deadline), bool(slashed)

    def balance(self, account: str) -> int:
        """Ether held by ``account``, in wei."""
        from web3 import Web3

        address = Web3.to_checksum_address(account)
        return self._read(lambda: int(self._w3.eth.get_balance(address)), "eth_getBalance")

    # ----- views -------------------------------------------------------------------------

    def owner(self) -> str:
        return str(self._call("owner"))

    def coordinator(self) -> str | None:
        """The coordinator's address, ``None`` before one is admitted."""
        return _address_or_none(self._call("coordinator"))

    def deployed_block(self) -> int:
        return int(self._call("deployedBlock"))

    def last_round(self) -> int:
        return int(self._call("lastRound"))

    def quorum(self) -> int:
        """Approvals a round proposed now would need."""
        return int(self._call("quorum"))

    def configured_quorum(self) -> int:
        """The owner's quorum setting; 0 means the default ⌈2n/3⌉."""
        return int(self._call("configuredQuorum"))

    def node_count(self) -> int:
        return int(self._call("nodeCount"))

    def is_node(self, account: str) -> bool:
        return bool(self._call("isNode", account))

    def node_key(self, node: str) -> bytes | None:
        """The node's X25519 public key, ``None`` if it has not registered one."""
        key = bytes(self._call("nodeKey", node))
        return key if any(key) else None

    def roster(self) -> list[RosterEntry]:
        """Admitted nodes with their keys, in the contract's roster order; a key no envelope
        can be sealed to (``protocol.envelope.usable_public_key``) reads as none registered,
        so every node leaves that member out alike instead of failing the round."""
        from protocol.envelope import usable_public_key

        nodes, keys = self._call("roster")
        return [
            RosterEntry(address=str(n), key=bytes(k) if usable_public_key(bytes(k)) else None)
            for n, k in zip(nodes, keys, strict=True)
        ]

    def round_state(self, round_number: int) -> RoundState:
        quorum, approvals, finalized = self._call("roundState", round_number)
        return RoundState(quorum=int(quorum), approvals=int(approvals), finalized=bool(finalized))

    def round_proposal(self, round_number: int) -> RoundProposal | None:
        """What the coordinator proposed for a round, read from its ``RoundProposed`` event."""
        found = self._indexed_events("RoundProposed", round_number.to_bytes(32, "big"))
        if not found:
            return None
        args = found[-1].args
        return RoundProposal(
            round=int(args["round"]),
            global_model_hash=bytes(args["globalModelHash"]),
            global_model_cid=str(args["globalModelCid"]),
            updates_root=bytes(args["updatesRoot"]),
            manifest_cid=str(args["manifestCid"]),
        )

    def forget_request(self, request_id: bytes) -> ForgetRequestEvent | None:
        """A forget request as opened on chain (commitment and named node), or ``None``."""
        found = self._indexed_events("ForgetRequested", _bytes32(request_id, "request id"))
        if not found:
            return None
        return _forget_request_event(found[0])

    def forget_requests_naming(self, node: str, *, from_block: int = 0) -> list[ForgetRequestEvent]:
        """Every forget request opened for ``node`` since ``from_block``, in chain order."""
        found = self.events(["ForgetRequested"], from_block=from_block)
        return [
            _forget_request_event(e) for e in found if str(e.args["node"]).lower() == node.lower()
        ]

    def has_approved(self, round_number: int, node: str) -> bool:
        return bool(self._call("hasApproved", round_number, node))

    def forget_state(self, request_id: bytes) -> ForgetStatus:
        state, node, after_round = self._call("forgetState", _bytes32(request_id, "request id"))
        return ForgetStatus(
            state=ForgetState(state), node=_address_or_none(node), after_round=int(after_round)
        )

    def block_number(self) -> int:
        return self._read(lambda: int(self._w3.eth.block_number), "eth_blockNumber")

    def block_timestamp(self, block_number: int) -> int:
        """Unix time of a block (for timelines in the explorer)."""
        block = self._read(lambda: self._w3.eth.get_block(block_number), "eth_getBlockByNumber")
        return int(block["timestamp"])

    def receipt(self, tx_hash: str) -> TxResult:
        """Block and gas of a mined transaction (e.g. one found through an event)."""
        receipt = self._read(
            lambda: self._w3.eth.get_transaction_receipt(tx_hash),  # type: ignore[arg-type]
            "eth_getTransactionReceipt",
        )
        return _tx_result(receipt)

    # ----- events ------------------------------------------------------------------------

    def events(
        self,
        names: Iterable[str] | None = None,
        *,
        from_block: int | None = None,
        to_block: int | None = None,
        chunk_blocks: int = LOG_CHUNK_BLOCKS,
        first_indexed: bytes | None = None,
    ) -> list[LedgerEvent]:
        """Decoded contract events in chain order, read in block ranges of ``chunk_blocks``.

        ``from_block`` defaults to the deployment block, ``to_block`` to the latest block;
        ``names`` restricts to those events (default: all); ``first_indexed`` to those whose
        first indexed argument is that 32-byte topic (e.g. one round, one request).
        """
        if chunk_blocks < 1:
            raise ValueError("chunk_blocks must be at least 1")
        by_topic = self._event_topics
        wanted = set(names) if names is not None else {n for n, _ in by_topic.values()}
        unknown = wanted - {n for n, _ in by_topic.values()}
        if unknown:
            raise ValueError(f"the contract has no event(s) {sorted(unknown)}")
        topics = [t for t, (n, _) in by_topic.items() if n in wanted]
        start = self.deployment_block if from_block is None else from_block
        end = self.block_number() if to_block is None else to_block
        found: list[LedgerEvent] = []
        for low in range(start, end + 1, chunk_blocks):
            high = min(low + chunk_blocks - 1, end)
            params: Any = {
                "address": self.address,
                "fromBlock": low,
                "toBlock": high,
                "topics": [topics] if first_indexed is None else [topics, _hex(first_indexed)],
            }
            logs = self._read(partial(self._w3.eth.get_logs, params), "eth_getLogs")
            found.extend(self._decode(log) for log in logs)
        found.sort(key=lambda e: (e.block_number, e.log_index))
        return found

    def _indexed_events(self, name: str, first_topic: bytes) -> list[LedgerEvent]:
        """Events ``name`` whose first indexed argument is ``first_topic``, in chain order."""
        return self.events([name], first_indexed=first_topic)

    def _decode(self, log: Any) -> LedgerEvent:
        name, event = self._event_topics[_hex(log["topics"][0])]
        decoded = event().process_log(log)
        return LedgerEvent(
            name=name,
            args={k: _plain(v) for k, v in decoded["args"].items()},
            block_number=int(log["blockNumber"]),
            tx_hash=_hex(log["transactionHash"]),
            log_index=int(log["logIndex"]),
        )

    @cached_property
    def _event_topics(self) -> dict[str, tuple[str, Any]]:
        """topic0 → (event name, web3 event class), for decoding logs."""
        topics: dict[str, tuple[str, Any]] = {}
        for item in self._contract.abi:
            if item["type"] == "event":
                name = str(item["name"])
                signature = f"{name}({','.join(i['type'] for i in item['inputs'])})"
                topic = "0x" + keccak256(signature.encode()).hex()
                topics[topic] = (name, self._contract.events[name])
        return topics

    # ----- plumbing ----------------------------------------------------------------------

    def _function(self, function: str, args: tuple[Any, ...]) -> Any:
        """The bound contract function; bad argument types are the caller's ValueError."""
        from web3.exceptions import MismatchedABI

        try:
            return self._contract.functions[function](*args)
        except MismatchedABI as exc:
            raise ValueError(f"{function}: arguments {args!r} do not fit the contract ABI") from exc

    def _read(self, fn: Callable[[], T], action: str) -> T:
        with _rpc_errors(self.rpc_url, action):
            return fn()

    def _call(self, function: str, *args: Any) -> Any:
        from web3.exceptions import ContractLogicError

        bound = self._function(function, args)
        with _rpc_errors(self.rpc_url, f"{function}()"):
            try:
                return bound.call()
            except ContractLogicError as exc:
                raise self._revert(function, exc) from exc

    def _revert(self, function: str, exc: Exception, tx_hash: str | None = None) -> ContractRevert:
        from web3.exceptions import ContractPanicError

        data = _revert_data(exc)
        name, args = self._errors.decode(data) if data else (None, {})
        if name is None and isinstance(exc, ContractPanicError):
            name = "Panic"
        shown = ", ".join(f"{k}={_show(v)}" for k, v in args.items())
        detail = f"{name}({shown})" if name else str(exc)
        return ContractRevert(
            f"{function} reverted: {detail}", error_name=name, error_args=args, tx_hash=tx_hash
        )

    def _transact(self, function: str, *args: Any, value: int = 0) -> TxResult:
        from web3.exceptions import ContractLogicError

        if self._account is None:
            raise LedgerError(f"{function}: this ledger is read-only (no private key given)")
        account = self._account
        call = self._function(function, args)
        with _rpc_errors(self.rpc_url, function):
            try:
                gas = call.estimate_gas(
                    {"from": account.address, "value": value}, block_identifier="pending"
                )
            except ContractLogicError as exc:
                raise self._revert(function, exc) from exc
            sent: dict[str, Any] = {}

            def build(nonce: int) -> Any:
                params: TxParams = {
                    "from": account.address,
                    "nonce": cast("Nonce", nonce),
                    "chainId": self.chain_id,
                    # Head-room: a concurrent approval can turn ours into the finalizing one,
                    # which emits one more event.
                    "gas": gas * 5 // 4 + 20_000,
                    "value": cast("Wei", value),
                }
                tx = call.build_transaction(params)
                sent.update(tx)
                return tx

            receipt = _send_and_wait(
                self._w3,
                _nonce_slot(self.rpc_url, self.chain_id, account.address),
                account,
                build,
                self._receipt_timeout,
            )
        result = _tx_result(receipt)
        if receipt["status"] != 1:
            raise self._replay_revert(function, sent, result)
        return result

    def _replay_revert(self, function: str, tx: Any, result: TxResult) -> ContractRevert:
        """Find why a mined transaction failed by re-running it on the state its block left.

        A transaction that passed estimation but failed when mined usually lost a race to an
        earlier one in the same block (e.g. the same approval twice), which that state shows.
        """
        from web3.exceptions import ContractLogicError

        fields = ("from", "to", "data", "gas", "value")
        call = cast("TxParams", {k: tx[k] for k in fields if k in tx})
        with _rpc_errors(self.rpc_url, f"replay of {function}"):
            try:
                self._w3.eth.call(call, block_identifier=result.block_number)
            except ContractLogicError as exc:
                return self._revert(function, exc, tx_hash=result.tx_hash)
        return ContractRevert(
            f"{function} reverted on chain (tx {result.tx_hash}, block {result.block_number})",
            error_name=None,
            tx_hash=result.tx_hash,
        )


def deploy(
    rpc_url: str,
    private_key: str | bytes,
    *,
    coordinator: str | None = None,
    quorum: int = 0,
    timeout: float = 10.0,
    receipt_timeout: float = 120.0,
) -> Deployment:
    """Deploy the committed contract build and return where it landed.

    ``coordinator`` may be admitted later; ``quorum`` 0 means the default ⌈2n/3⌉.
    """
    from eth_account import Account

    artifact = load_artifact()
    w3 = _connect(rpc_url, timeout)
    account = Account.from_key(private_key)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    zero = "0x" + "00" * 20
    with _rpc_errors(rpc_url, "deploy"):
        chain_id = int(w3.eth.chain_id)
        constructor = factory.constructor(coordinator or zero, quorum)
        receipt = _send_and_wait(
            w3,
            _nonce_slot(rpc_url, chain_id, account.address),
            account,
            lambda nonce: constructor.build_transaction(
                {"from": account.address, "nonce": nonce, "chainId": chain_id}
            ),
            receipt_timeout,
        )
    result = _tx_result(receipt)
    if receipt["status"] != 1 or receipt["contractAddress"] is None:
        raise LedgerError(f"deployment transaction {result.tx_hash} failed on {rpc_url}")
    return Deployment(
        chain_id=chain_id,
        address=str(receipt["contractAddress"]),
        block_number=result.block_number,
        tx_hash=result.tx_hash,
        deployer=str(account.address),
        abi_keccak256=artifact.abi_keccak256,
        compiler=artifact.compiler,
        rpc_url=rpc_url,
    )


def _send_and_wait(
    w3: Web3,
    slot: _NonceSlot,
    account: LocalAccount,
    build: Callable[[int], Any],
    receipt_timeout: float,
) -> TxReceipt:
    """Sign ``build(nonce)`` with the account's next nonce, send it, wait for the receipt.

    The per-account lock covers nonce → sign → send, so one account's transactions get
    consecutive nonces in call order while the receipt waits run in parallel. On a nonce
    error (another process used the key) the nonce is re-read and the send retried once;
    a receipt that never comes also drops the local nonce (the chain may have lost the tx),
    and a local nonce ahead of the chain's pending count is brought back to it.
    """
    from web3.exceptions import TimeExhausted

    tx_hash = _sign_and_send(w3, slot, account, build)
    try:
        return w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=receipt_timeout, poll_latency=0.1
        )
    except TimeExhausted:
        with slot.lock:
            slot.next_nonce = None
        raise


def _sign_and_send(
    w3: Web3, slot: _NonceSlot, account: LocalAccount, build: Callable[[int], Any]
) -> HexBytes:
    from web3.exceptions import Web3RPCError

    with slot.lock:
        for attempt in (1, 2):
            pending = w3.eth.get_transaction_count(account.address, "pending")
            # Ahead of the chain's count: the chain lost blocks or pool transactions (a dev
            # chain restarted from an older snapshot); a nonce past the gap would never mine.
            if slot.next_nonce is None or slot.next_nonce > pending:
                slot.next_nonce = pending
            signed = account.sign_transaction(build(slot.next_nonce))
            try:
                tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError as exc:
                slot.next_nonce = None
                if attempt == 1 and "nonce" in str(exc).lower():
                    continue
                raise
            except Exception:
                slot.next_nonce = None
                raise
            slot.next_nonce += 1
            return tx_hash
    raise AssertionError("unreachable")


def _tx_result(receipt: TxReceipt) -> TxResult:
    return TxResult(
        tx_hash=_hex(receipt["transactionHash"]),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
    )


def _positive_wei(amount: int) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError(f"amount must be a positive number of wei, got {amount!r}")
    return amount


def _forget_request_event(event: LedgerEvent) -> ForgetRequestEvent:
    args = event.args
    return ForgetRequestEvent(
        request_id=bytes(args["requestId"]),
        record_commitment=bytes(args["recordCommitment"]),
        node=str(args["node"]),
        label=str(args.get("requestLabel", "")),
        block_number=event.block_number,
    )


def _address_or_none(value: Any) -> str | None:
    text = str(value)
    return None if int(text, 16) == 0 else text


def _plain(value: Any) -> Any:
    """Event arguments as plain Python values (HexBytes → bytes)."""
    return bytes(value) if isinstance(value, bytes | bytearray) else value


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)
