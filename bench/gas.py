"""Gas benchmark: what every Lethe contract call costs, measured on a real anvil.

``python -m bench.gas`` (``make bench-gas``) deploys the committed build on a fresh dev
chain, sets a stake policy (so admissions, rounds and requests pay for the staking checks a
staked federation makes), has NODES nodes stake and join, funds the reward pool, runs two
rounds and one forget request (proving the record is among the node's 65,536 committed
in a finalized round), lets a second request miss its deadline and slashes it,
has every node claim its rewards and one node leave, and writes ``bench/results/gas.json``
(gas used per call; the most expensive occurrence of each, e.g. the approval that finalizes
a round, the first node admitted) and ``gas.png``.

It then prices a whole round at n = 3, 5 and 10 nodes, each on a fresh chain with the same
stake policy: ``round_total_n{n}`` is one ``proposeRoundSigned`` carrying every node's
EIP-712 approval (the coordinator's path), ``round_separate_n{n}`` is ``proposeRound`` plus
n ``approveRound`` transactions (each node on its own, as before).
Exits non-zero when a target is missed.
"""

from __future__ import annotations

import functools
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from launcher.devnet import Devnet
from protocol.approvals import RoundApproval
from protocol.envelope import public_key_bytes
from protocol.hashing import keccak256
from protocol.ledger import Ledger, StakePolicy, TxResult, deploy
from protocol.records_root import RecordsRoot
from protocol.typed_data import Domain

RESULTS = Path(__file__).resolve().parent / "results"
NODES = 5
ROUND_SIZES = (3, 5, 10)
KEYS = (
    "deploy",
    "admit_node",
    "register_key",
    "propose_round",
    "approve_round",
    "request_forget",
    "certify_forget",
    "complete_forget",
    # Stakes, rewards and slashing (issue #18): "claim" is one round's reward.
    "set_stake_policy",
    "stake",
    "fund",
    "claim",
    "slash",
    "request_unstake",
    "withdraw_stake",
    # One round, all of it (issue #20): proposal and every node's approval.
    *(f"round_total_n{n}" for n in ROUND_SIZES),
    *(f"round_separate_n{n}" for n in ROUND_SIZES),
)
ETHER = 10**18
POLICY = StakePolicy(
    required_stake=ETHER,
    slash_amount=ETHER // 4,
    reward_per_round=ETHER // 100,
    forget_deadline_blocks=4,
    unstake_delay_blocks=4,
)
TARGETS: dict[tuple[str, ...], int] = {
    ("propose_round",): 150_000,
    ("approve_round",): 60_000,
    ("request_forget", "certify_forget", "complete_forget"): 250_000,
    ("round_total_n10",): 150_000,
}
# Realistic lengths: CIDv1 base32 of a raw sha2-256 block, as the content store makes them.
MODEL_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
MANIFEST_CID = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq"
CERT_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
RECORDS = 2**16
"""Records the requested node committed to: its proof has 16 siblings."""


def _x25519_key(rng: random.Random) -> bytes:
    """A real X25519 public key, reproducible from the bench's seed (the contract refuses
    random bytes that are no usable key)."""
    return public_key_bytes(X25519PrivateKey.from_private_bytes(rng.randbytes(32)))


def measure(nodes: int = NODES) -> dict[str, int]:
    """Run the scenario on a fresh anvil; return the worst gas seen for each call."""
    rng = random.Random(0)
    worst = dict.fromkeys(KEYS, 0)

    def record(key: str, call: Callable[[], TxResult]) -> None:
        worst[key] = max(worst[key], call().gas_used)

    with Devnet() as chain:
        owner_acct, coordinator_acct, *node_accts = chain.accounts[: 2 + nodes]
        deployment = deploy(
            chain.rpc_url, owner_acct.private_key, coordinator=coordinator_acct.address
        )
        owner = Ledger.from_deployment(deployment, private_key=owner_acct.private_key)
        worst["deploy"] = owner.receipt(deployment.tx_hash).gas_used
        coordinator = owner.with_account(coordinator_acct.private_key)
        node_ledgers = [owner.with_account(a.private_key) for a in node_accts]
        record("set_stake_policy", functools.partial(owner.set_stake_policy, POLICY))
        record("fund", functools.partial(owner.fund, 2 * nodes * POLICY.reward_per_round))
        for acct, node in zip(node_accts, node_ledgers, strict=True):
            record("stake", functools.partial(node.stake, POLICY.required_stake))
            record("admit_node", functools.partial(owner.admit_node, acct.address))
            record("register_key", functools.partial(node.register_key, _x25519_key(rng)))

        proposed: dict[int, tuple[bytes, bytes]] = {}

        def propose(round_number: int) -> TxResult:
            model_hash, updates_root = proposed[round_number] = (
                rng.randbytes(32),
                rng.randbytes(32),
            )
            return coordinator.propose_round(
                round_number, model_hash, MODEL_CID, updates_root, MANIFEST_CID
            )

        def approve_all(round_number: int) -> None:
            # Every node approves: both plain approvals and the finalizing one are measured.
            for node in node_ledgers:
                approve = functools.partial(node.approve_round, round_number)
                record("approve_round", functools.partial(approve, *proposed[round_number]))

        # As the coordinator sends it: the request id's text (a uuid4 hex) goes on chain, with
        # the proof that the node committed to the record in finalized round 1.
        label, owner_node = rng.randbytes(16).hex(), node_ledgers[0]
        request_id = keccak256(label.encode())
        record("propose_round", lambda: propose(1))
        approve_all(1)
        records = RecordsRoot.of(1, (rng.randbytes(32) for _ in range(RECORDS)), 0)
        signature = records.sign(Domain.of(owner), node_accts[0].private_key)
        record_commitment = records.leaves[RECORDS // 3]
        committed = records.proof(record_commitment, signature)
        record(
            "request_forget",
            lambda: coordinator.request_forget(
                label, record_commitment, str(owner_node.account), committed
            ),
        )
        record(
            "certify_forget",
            lambda: owner_node.certify_forget(request_id, CERT_CID, rng.randbytes(32)),
        )
        record("propose_round", lambda: propose(2))
        approve_all(2)
        record("complete_forget", lambda: coordinator.complete_forget(request_id, 2))
        for node in node_ledgers:
            for round_number in (1, 2):
                record("claim", functools.partial(node.claim_rewards, [round_number]))

        missed, late_node = rng.randbytes(32), node_ledgers[1]
        late = RecordsRoot.of(2, [rng.randbytes(32)], 0)
        late_signature = late.sign(Domain.of(owner), node_accts[1].private_key)
        coordinator.request_forget(
            missed,
            late.leaves[0],
            str(late_node.account),
            late.proof(late.leaves[0], late_signature),
        )
        _mine(chain.rpc_url, POLICY.forget_deadline_blocks + 1)
        record("slash", functools.partial(node_ledgers[-1].slash, missed))
        leaver = node_ledgers[-1]
        record("request_unstake", leaver.request_unstake)
        _mine(chain.rpc_url, POLICY.unstake_delay_blocks)
        record("withdraw_stake", leaver.withdraw_stake)
    return worst


def measure_round(nodes: int) -> tuple[int, int]:
    """Gas of one round at ``nodes`` nodes: signed approvals in the proposal's transaction,
    and proposal plus one approval transaction per node (each on a fresh chain)."""
    rng = random.Random(nodes)
    totals = []
    for signed in (True, False):
        with Devnet(accounts=2 + nodes) as chain:
            owner_acct, coordinator_acct, *node_accts = chain.accounts[: 2 + nodes]
            deployment = deploy(
                chain.rpc_url, owner_acct.private_key, coordinator=coordinator_acct.address
            )
            owner = Ledger.from_deployment(deployment, private_key=owner_acct.private_key)
            coordinator = owner.with_account(coordinator_acct.private_key)
            owner.set_stake_policy(POLICY)
            for acct in node_accts:
                owner.with_account(acct.private_key).stake(POLICY.required_stake)
                owner.admit_node(acct.address)
            content = RoundApproval(
                1, rng.randbytes(32), MODEL_CID, rng.randbytes(32), MANIFEST_CID
            )
            fields = content.fields()
            if signed:
                domain = Domain.of(owner)
                signatures = {a.address: content.sign(domain, a.private_key) for a in node_accts}
                totals.append(coordinator.propose_round_signed(*fields, signatures).gas_used)
            else:
                total = coordinator.propose_round(*fields).gas_used
                for acct in node_accts:
                    node = owner.with_account(acct.private_key)
                    total += node.approve_round(
                        1, content.global_model_hash, content.updates_root
                    ).gas_used
                totals.append(total)
            if not owner.round_state(1).finalized:
                raise RuntimeError(f"the measured round at n = {nodes} did not finalize")
    return totals[0], totals[1]


def _mine(rpc_url: str, blocks: int) -> None:
    """Mine ``blocks`` empty blocks on anvil (to pass a deadline or a delay)."""
    from web3 import Web3

    Web3(Web3.HTTPProvider(rpc_url)).provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]


def check_targets(gas: dict[str, int]) -> list[str]:
    """Human-readable lines, one per target, prefixed PASS or FAIL."""
    lines = []
    for keys, limit in TARGETS.items():
        used = sum(gas[k] for k in keys)
        verdict = "PASS" if used <= limit else "FAIL"
        lines.append(f"{verdict} {' + '.join(keys)} = {used} (target ≤ {limit})")
    return lines


def plot(gas: dict[str, int], path: Path) -> None:
    """A bar chart of the calls a round and a forget request cost (deploy is off-scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in KEYS if k != "deploy"]
    fig, ax = plt.subplots(figsize=(12, 4))
    bars = ax.bar(keys, [gas[k] for k in keys], color="#4c72b0")
    ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    ax.set_ylabel("gas used")
    ax.set_title(f"Lethe contract calls and whole rounds (deploy: {gas['deploy']:,} gas)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    """Measure, write the results, report the targets."""
    gas = measure()
    for n in ROUND_SIZES:
        gas[f"round_total_n{n}"], gas[f"round_separate_n{n}"] = measure_round(n)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gas.json").write_text(json.dumps(gas, indent=2) + "\n", encoding="utf-8")
    plot(gas, RESULTS / "gas.png")
    width = max(map(len, KEYS))
    for key in KEYS:
        print(f"{key:<{width}}  {gas[key]:>9,}")
    report = check_targets(gas)
    print("\n".join(report))
    print(f"wrote {RESULTS / 'gas.json'} and {RESULTS / 'gas.png'}")
    return 0 if all(line.startswith("PASS") for line in report) else 1


if __name__ == "__main__":
    sys.exit(main())
