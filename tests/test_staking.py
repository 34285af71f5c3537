"""Nodes answer for their forgets on chain: stakes, rewards and slashing, on a real anvil.

Specifications:
- with a stake policy, the owner can admit only a node that staked the required amount;
- past a request's forget deadline anyone can slash the uncertified owner node, once; before
  the deadline, after certification and a second time the slash reverts; a node certifying
  late pays the slash itself; the slashed ether goes to the reward pool;
- a node leaving waits the unstake delay, stays answerable meanwhile, and cannot withdraw
  while a forget request naming it is open;
- each approver of a finalized round claims the round's reward once; claims add up to what
  was funded, and the contract always holds exactly the stakes plus the pool;
- a payee that calls back into the contract while being paid (tests/contracts/GreedyNode.sol)
  gets nothing more: every payment comes after the state that forbids a second one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from protocol.errors import LedgerError
from protocol.hashing import keccak256
from protocol.ledger import (
    ContractRevert,
    ForgetState,
    Ledger,
    StakePolicy,
    TxResult,
    deploy,
    load_artifact,
)
from protocol.records_root import RecordsProof
from tests.records_proofs import committed

if TYPE_CHECKING:
    from launcher.devnet import Devnet

pytest_plugins = ["tests.chain_fixtures"]

ETHER = 10**18
POLICY = StakePolicy(
    required_stake=ETHER,
    slash_amount=ETHER // 4,
    reward_per_round=ETHER // 100,
    forget_deadline_blocks=10,
    unstake_delay_blocks=20,
)
GREEDY_SOURCE = Path(__file__).parent / "contracts" / "GreedyNode.sol"


class Staked:
    """A contract with POLICY, a coordinator and three nodes that staked and were admitted."""

    def __init__(self, devnet: Devnet, policy: StakePolicy = POLICY) -> None:
        accounts = devnet.accounts
        self.devnet = devnet
        deployment = deploy(
            devnet.rpc_url, accounts[0].private_key, coordinator=accounts[1].address
        )
        self.owner = Ledger.from_deployment(deployment, private_key=accounts[0].private_key)
        self.owner.set_stake_policy(policy)
        self.coordinator = self.owner.with_account(accounts[1].private_key)
        self.nodes = [self.owner.with_account(a.private_key) for a in accounts[2:5]]
        self.keys = {str(a.address): a.private_key for a in accounts[2:5]}
        self.outsider = self.owner.with_account(accounts[-1].private_key)
        for node in self.nodes:
            if policy.required_stake:
                node.stake(policy.required_stake)
            self.owner.admit_node(str(node.account))
        self.proposed: dict[int, tuple[bytes, bytes]] = {}
        self.records_round = 0

    def propose(self, round_number: int) -> tuple[bytes, bytes]:
        model, root = keccak256(b"model %d" % round_number), keccak256(b"root %d" % round_number)
        self.coordinator.propose_round(round_number, model, "bafy-model", root, "bafy-manifest")
        self.proposed[round_number] = (model, root)
        return model, root

    def approve(self, round_number: int, node: Ledger) -> TxResult:
        return node.approve_round(round_number, *self.proposed[round_number])

    def request(self, label: bytes, node: Ledger) -> bytes:
        """Open a request for a record ``node`` committed to in a finalized round."""
        request_id = keccak256(label)
        record = keccak256(b"record " + label)
        self.coordinator.request_forget(
            request_id, record, str(node.account), self.committed(node, record)
        )
        return request_id

    def committed(self, node: Ledger, record: bytes) -> RecordsProof:
        """``node``'s signed records root holding ``record``, in a round finalized for it."""
        if not self.records_round:
            self.records_round = self.owner.last_round() + 1
            self.propose(self.records_round)
            for approver in self.nodes[:2]:
                self.approve(self.records_round, approver)
        key = self.keys[str(node.account)]
        return committed(node, key, record, self.records_round, [keccak256(b"other record")])

    def mine(self, blocks: int) -> None:
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(self.devnet.rpc_url))
        w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    def held(self) -> int:
        """Ether the contract holds, in wei."""
        return self.owner.balance(self.owner.address)


def reverts(call: Callable[[], Any]) -> str | None:
    with pytest.raises(ContractRevert) as excinfo:
        call()
    return excinfo.value.error_name


@pytest.fixture
def staked(devnet: Devnet) -> Staked:
    return Staked(devnet)


def test_only_a_node_that_staked_enough_is_admitted(staked: Staked, devnet: Devnet) -> None:
    newcomer = staked.owner.with_account(devnet.accounts[6].private_key)
    address = str(newcomer.account)
    assert reverts(lambda: staked.owner.admit_node(address)) == "StakeTooLow"
    newcomer.stake(POLICY.required_stake - 1)
    assert reverts(lambda: staked.owner.admit_node(address)) == "StakeTooLow"
    newcomer.stake(1)
    staked.owner.admit_node(address)
    assert staked.owner.is_node(address)
    assert staked.owner.stake_of(address).amount == POLICY.required_stake


def test_slash_before_the_deadline_reverts_after_it_succeeds_once(staked: Staked) -> None:
    node = staked.nodes[0]
    address = str(node.account)
    request_id = staked.request(b"r1", node)
    deadline, slashed = staked.owner.forget_deadline(request_id)
    assert deadline == staked.owner.block_number() + POLICY.forget_deadline_blocks
    assert not slashed and staked.owner.stake_of(address).open_forgets == 1

    assert reverts(lambda: staked.outsider.slash(request_id)) == "DeadlineNotPassed"
    staked.mine(POLICY.forget_deadline_blocks - 1)
    assert staked.owner.block_number() + 1 == deadline  # the slash would be mined at it
    assert reverts(lambda: staked.outsider.slash(request_id)) == "DeadlineNotPassed"
    staked.mine(1)  # now the slash is mined at the deadline + 1
    held = staked.held()
    tx = staked.outsider.slash(request_id)

    assert staked.owner.stake_of(address).amount == POLICY.required_stake - POLICY.slash_amount
    assert staked.owner.stake_of(address).open_forgets == 0
    assert staked.owner.reward_pool() == POLICY.slash_amount
    assert staked.held() == held  # moved from the stake to the pool, not paid out
    assert staked.owner.forget_deadline(request_id) == (deadline, True)
    [event] = staked.owner.events(["ForgetSlashed"])
    assert event.tx_hash == tx.tx_hash and event.args["node"] == address
    assert event.args["caller"] == staked.outsider.account
    assert event.args["amount"] == POLICY.slash_amount

    assert reverts(lambda: staked.outsider.slash(request_id)) == "AlreadySlashed"
    # Forgetting late still counts, without a second slash.
    node.certify_forget(request_id, "bafy-cert", keccak256(b"new model"))
    assert staked.owner.forget_state(request_id).state is ForgetState.CERTIFIED
    assert staked.owner.stake_of(address).amount == POLICY.required_stake - POLICY.slash_amount
    assert reverts(lambda: staked.outsider.slash(request_id)) == "AlreadySlashed"


def test_a_node_that_certified_in_time_cannot_be_slashed(staked: Staked) -> None:
    node = staked.nodes[1]
    request_id = staked.request(b"r2", node)
    node.certify_forget(request_id, "bafy-cert", keccak256(b"new model"))
    staked.mine(POLICY.forget_deadline_blocks + 1)
    assert reverts(lambda: staked.outsider.slash(request_id)) == "AlreadyCertified"
    assert staked.owner.stake_of(str(node.account)).amount == POLICY.required_stake
    assert reverts(lambda: staked.outsider.slash(keccak256(b"nothing"))) == "UnknownRequest"


def test_certifying_after_the_deadline_pays_the_slash(staked: Staked) -> None:
    node = staked.nodes[2]
    request_id = staked.request(b"r3", node)
    staked.mine(POLICY.forget_deadline_blocks + 1)
    node.certify_forget(request_id, "bafy-cert", keccak256(b"new model"))
    [event] = staked.owner.events(["ForgetSlashed"])
    assert event.args["caller"] == node.account and event.args["amount"] == POLICY.slash_amount
    assert staked.owner.reward_pool() == POLICY.slash_amount
    assert reverts(lambda: staked.outsider.slash(request_id)) == "AlreadySlashed"


def test_slashing_never_takes_more_than_is_left(devnet: Devnet) -> None:
    harsh = Staked(devnet, StakePolicy(ETHER, 3 * ETHER, 0, 5, 5))
    node = harsh.nodes[0]
    request_id = harsh.request(b"all", node)
    harsh.mine(6)
    harsh.outsider.slash(request_id)
    assert harsh.owner.stake_of(str(node.account)).amount == 0
    assert harsh.owner.reward_pool() == ETHER == harsh.held() - 2 * ETHER


def test_without_a_deadline_there_is_nothing_to_slash(devnet: Devnet) -> None:
    lenient = Staked(devnet, StakePolicy(0, 0, 0, 0, 0))
    request_id = lenient.request(b"r4", lenient.nodes[0])
    lenient.mine(50)
    assert reverts(lambda: lenient.outsider.slash(request_id)) == "NoDeadline"


def test_leaving_waits_the_delay_and_for_every_open_forget(devnet: Devnet) -> None:
    # A deadline longer than the delay: the node is still on time when it could leave.
    staked = Staked(devnet, StakePolicy(ETHER, ETHER // 4, 0, 30, 20))
    node = staked.nodes[0]
    address = str(node.account)
    assert reverts(node.withdraw_stake) == "NoUnstakeRequested"
    node.request_unstake()
    assert reverts(lambda: node.stake(1)) == "UnstakePending"
    assert reverts(node.withdraw_stake) == "StakeLocked"
    # Still admitted and answerable while it waits.
    request_id = staked.request(b"leaving", node)
    staked.mine(20)
    assert reverts(node.withdraw_stake) == "OpenForgets"
    node.certify_forget(request_id, "bafy-cert", keccak256(b"new model"))
    before = node.balance(address)
    tx = node.withdraw_stake()
    paid = node.balance(address) - before + tx.gas_used * _gas_price(node, tx)
    assert paid == ETHER
    assert not staked.owner.is_node(address)
    assert staked.owner.stake_of(address).amount == 0
    assert staked.held() == 2 * ETHER


def test_a_removed_node_with_an_open_forget_leaves_only_after_the_slash(staked: Staked) -> None:
    node = staked.nodes[1]
    request_id = staked.request(b"removed", node)
    staked.owner.remove_node(str(node.account))
    node.request_unstake()
    staked.mine(POLICY.unstake_delay_blocks)
    assert reverts(node.withdraw_stake) == "OpenForgets"
    staked.outsider.slash(request_id)
    node.withdraw_stake()
    assert staked.held() == 2 * POLICY.required_stake + POLICY.slash_amount
    assert staked.owner.reward_pool() == POLICY.slash_amount


def test_rewards_add_up_to_what_was_funded(staked: Staked) -> None:
    reward = POLICY.reward_per_round
    approvers = {1: staked.nodes, 2: staked.nodes[:2], 3: staked.nodes[:1]}
    funded = reward * 5  # rounds 1 and 2 finalize with 3 + 2 approvals; round 3 does not
    staked.owner.fund(funded)
    for round_number, nodes in approvers.items():
        staked.propose(round_number)
        for node in nodes:
            staked.approve(round_number, node)
    assert staked.owner.round_reward(1) == reward
    assert staked.held() == 3 * POLICY.required_stake + funded

    last = staked.nodes[2]
    assert reverts(lambda: last.claim_rewards([2])) == "NotApprover"
    assert reverts(lambda: staked.nodes[0].claim_rewards([3])) == "RoundNotFinalized"
    paid = 0
    for node in staked.nodes:
        rounds = [r for r, nodes in approvers.items() if node in nodes and r != 3]
        before = node.balance(str(node.account))
        tx = node.claim_rewards(rounds)
        gained = node.balance(str(node.account)) - before + tx.gas_used * _gas_price(node, tx)
        assert gained == reward * len(rounds)
        paid += gained
        again = functools.partial(node.claim_rewards, rounds)
        assert reverts(again) == "RewardAlreadyClaimed"
    assert paid == funded
    assert staked.owner.reward_pool() == 0
    assert staked.held() == 3 * POLICY.required_stake
    claims = staked.owner.events(["RewardClaimed"])
    assert sum(e.args["amount"] for e in claims) == funded and len(claims) == 5


def test_a_claim_the_pool_cannot_cover_reverts_and_keeps_it(staked: Staked) -> None:
    staked.owner.fund(POLICY.reward_per_round - 1)
    staked.propose(1)
    for node in staked.nodes[:2]:
        staked.approve(1, node)
    assert reverts(lambda: staked.nodes[0].claim_rewards([1])) == "RewardPoolShort"
    assert not staked.owner.reward_claimed(1, str(staked.nodes[0].account))
    staked.outsider.fund(1)  # anyone may top up the pool
    staked.nodes[0].claim_rewards([1])
    assert staked.owner.reward_pool() == 0


def test_zero_and_negative_amounts_are_refused(staked: Staked) -> None:
    with pytest.raises(ValueError, match="positive"):
        staked.owner.fund(0)
    with pytest.raises(ValueError, match="positive"):
        staked.nodes[0].stake(-5)
    with pytest.raises(LedgerError, match="read-only"):
        Ledger(staked.owner.rpc_url, staked.owner.address).fund(1)


# ----- a payee that calls back while being paid ----------------------------------------------


@cache
def greedy_artifact() -> dict[str, Any]:
    from coordinator.contract_build import compile_contract

    artifact: dict[str, Any] = json.loads(
        compile_contract(GREEDY_SOURCE.read_text(encoding="utf-8")).artifact
    )
    return artifact


class Greedy:
    """A deployed GreedyNode, operated by a dev account, acting on one Lethe contract."""

    def __init__(self, devnet: Devnet, lethe: Ledger, account: int = 7) -> None:
        from eth_account import Account
        from web3 import Web3

        artifact = greedy_artifact()
        self._w3 = Web3(Web3.HTTPProvider(devnet.rpc_url))
        self._operator = Account.from_key(devnet.accounts[account].private_key)
        factory = self._w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self._send(factory.constructor(lethe.address))
        self.address = Web3.to_checksum_address(receipt["contractAddress"])
        self._contract = self._w3.eth.contract(address=self.address, abi=artifact["abi"])
        self._lethe = self._w3.eth.contract(address=lethe.address, abi=load_artifact().abi)

    def _send(self, call: Any, value: int = 0) -> Any:
        tx = call.build_transaction(
            {
                "from": self._operator.address,
                "value": value,
                "gas": 3_000_000,
                "nonce": self._w3.eth.get_transaction_count(self._operator.address, "pending"),
            }
        )
        signed = self._operator.sign_transaction(tx)
        tx_hash = self._w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self._w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
        assert receipt["status"] == 1, f"{call} failed"
        return receipt

    def calldata(self, function: str, *args: Any) -> bytes:
        return bytes.fromhex(self._lethe.encode_abi(function, args=list(args))[2:])

    def act(self, function: str, *args: Any, value: int = 0) -> None:
        self._send(self._contract.functions.act(self.calldata(function, *args)), value)

    def reenter_with(self, function: str, *args: Any) -> None:
        self._send(self._contract.functions.setReentry(self.calldata(function, *args)))

    def read(self, name: str) -> int:
        return int(self._contract.functions[name]().call())


def test_a_reentrant_payee_is_paid_exactly_once(staked: Staked, devnet: Devnet) -> None:
    greedy = Greedy(devnet, staked.owner)
    greedy.act("stake", value=POLICY.required_stake)
    staked.owner.admit_node(greedy.address)
    staked.owner.fund(10 * POLICY.reward_per_round)
    model, root = staked.propose(1)
    greedy.act("approveRound", 1, model, root)
    staked.approve(1, staked.nodes[0])
    staked.approve(1, staked.nodes[1])
    assert staked.owner.round_state(1).finalized

    greedy.reenter_with("claimRewards", [1])
    greedy.act("claimRewards", [1])
    assert greedy.read("received") == POLICY.reward_per_round
    assert greedy.read("reentryAttempts") == 1 and greedy.read("reentrySuccesses") == 0
    assert staked.owner.reward_pool() == 9 * POLICY.reward_per_round

    greedy.reenter_with("withdrawStake")
    greedy.act("requestUnstake")
    staked.mine(POLICY.unstake_delay_blocks)
    greedy.act("withdrawStake")
    assert greedy.read("received") == POLICY.reward_per_round + POLICY.required_stake
    assert greedy.read("reentryAttempts") == 2 and greedy.read("reentrySuccesses") == 0
    assert staked.held() == 3 * POLICY.required_stake + 9 * POLICY.reward_per_round
    assert not staked.owner.is_node(greedy.address)


def _gas_price(ledger: Ledger, tx: TxResult) -> int:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(ledger.rpc_url))
    return int(w3.eth.get_transaction_receipt(tx.tx_hash)["effectiveGasPrice"])  # type: ignore[arg-type]


def test_a_record_the_node_never_committed_to_cannot_be_requested(staked: Staked) -> None:
    # Attack: the coordinator opens requests for records the victim never held. The honest
    # victim cannot certify them; before, each missed deadline slashed it (1.0 -> 0.5 -> 0.0
    # ETH with three) and the open requests made withdrawStake revert OpenForgets.
    victim, other = staked.nodes[0], staked.nodes[1]
    address = str(victim.account)
    held = keccak256(b"a record the victim holds")
    honest = staked.committed(victim, held)
    bogus = keccak256(b"a record the victim never held")
    outcomes = []
    for label, proof in [
        (b"bogus-proof", honest),  # the victim's real root, proof of another record
        (b"no-proof", dataclasses.replace(honest, index=0, proof=())),
        (b"other-root", staked.committed(other, bogus)),  # another node's root
        (b"made-up-root", committed(victim, staked.keys[str(other.account)], bogus, 1)),
        (b"unfinalized", committed(victim, staked.keys[address], bogus, 99)),
    ]:
        request = functools.partial(
            staked.coordinator.request_forget, keccak256(label), bogus, address, proof
        )
        outcomes.append(reverts(request))
    assert outcomes == [
        "NotCommitted",
        "NotCommitted",
        "NotRecordsRootSigner",
        "NotRecordsRootSigner",
        "RoundNotFinalized",
    ]
    assert staked.owner.stake_of(address).open_forgets == 0
    victim.request_unstake()
    staked.mine(POLICY.unstake_delay_blocks)
    victim.withdraw_stake()  # nothing open: the victim leaves with its whole stake
    assert staked.owner.stake_of(address).amount == 0


def test_a_root_from_before_a_certification_cannot_request_the_record_again(
    staked: Staked,
) -> None:
    # Attack: after the node forgot a record, the coordinator replays the old root (which
    # held it) to request that record again and have the node slashed for it.
    node = staked.nodes[0]
    record = keccak256(b"record first")
    old_root = staked.committed(node, record)
    staked.coordinator.request_forget(keccak256(b"first"), record, str(node.account), old_root)
    node.certify_forget(keccak256(b"first"), "bafy-cert", keccak256(b"new model"))
    again = lambda: staked.coordinator.request_forget(  # noqa: E731
        keccak256(b"again"), record, str(node.account), old_root
    )
    assert reverts(again) == "StaleRecordsRoot"
    # A root signed after the certification (a later round) is accepted for other records.
    staked.records_round = 0
    other = keccak256(b"record later")
    staked.coordinator.request_forget(
        keccak256(b"later"), other, str(node.account), staked.committed(node, other)
    )
