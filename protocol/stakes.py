"""Who staked, earned, claimed and was slashed: read from the contract's events and views.

The contract keeps no per-node list of rounds (that would be a loop over history), so what a
node can still claim is found here: the finalized rounds it approved whose reward it has not
claimed. One pass over the events serves the node's command line, the audit and the
explorer alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.ledger import Ledger, LedgerEvent

WEI_PER_ETHER = 10**18
STAKE_EVENTS = (
    "StakePolicySet",
    "Staked",
    "UnstakeRequested",
    "StakeWithdrawn",
    "RewardsFunded",
    "RewardClaimed",
    "ForgetSlashed",
)
EVENTS = (*STAKE_EVENTS, "RoundApproved", "RoundFinalized")


def parse_ether(text: str, *, allow_zero: bool = False) -> int:
    """``"0.5"`` → 500000000000000000 wei; ValueError for anything but a positive amount
    (or zero, if ``allow_zero``)."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise ValueError(f"not an amount of ether: {text!r}") from exc
    wei = value * WEI_PER_ETHER
    if (
        not value.is_finite()
        or value < 0
        or (value == 0 and not allow_zero)
        or wei != wei.to_integral_value()
    ):
        what = "an amount" if allow_zero else "a positive amount"
        raise ValueError(f"not {what} of ether (at most 18 decimals): {text!r}")
    return int(wei)


def format_ether(wei: int) -> str:
    """Wei as ether, without trailing zeros: 1500000000000000000 → ``"1.5 ETH"``."""
    ether = (Decimal(wei) / WEI_PER_ETHER).quantize(Decimal(1) / WEI_PER_ETHER, ROUND_DOWN)
    text = format(ether.normalize(), "f")
    return f"{text} ETH"


@dataclass
class NodeStanding:
    """One node's account with the federation, in wei (from events, so history included)."""

    address: str
    staked: int = 0
    withdrawn: int = 0
    slashed: int = 0
    slashes: list[str] = field(default_factory=list)  # request ids, 0x-hex
    approved_rounds: list[int] = field(default_factory=list)
    claimed_rounds: list[int] = field(default_factory=list)
    claimed: int = 0
    claimable_rounds: list[int] = field(default_factory=list)
    claimable: int = 0
    unlock_block: int = 0

    @property
    def stake(self) -> int:
        """What the contract holds for the node now."""
        return self.staked - self.withdrawn - self.slashed

    def as_dict(self) -> dict[str, object]:
        return {
            "address": self.address,
            "stake_wei": self.stake,
            "slashed_wei": self.slashed,
            "slashed_requests": self.slashes,
            "rewards_claimed_wei": self.claimed,
            "rewards_claimable_wei": self.claimable,
            "claimable_rounds": self.claimable_rounds,
            "unlock_block": self.unlock_block,
        }


@dataclass
class StakeLedger:
    """Everyone's standing, the pool and the policy history, from one read of the events."""

    nodes: dict[str, NodeStanding] = field(default_factory=dict)
    funded: int = 0
    slashed_to_pool: int = 0
    paid: int = 0
    policies: list[dict[str, int]] = field(default_factory=list)

    @property
    def pool(self) -> int:
        """Funded plus slashed, minus paid: what the contract's ``rewardPool`` must read."""
        return self.funded + self.slashed_to_pool - self.paid

    def node(self, address: str) -> NodeStanding:
        return self.nodes.setdefault(address, NodeStanding(address))

    @property
    def in_use(self) -> bool:
        """Whether the federation uses stakes or rewards at all (else views can skip them)."""
        return bool(self.policies and any(any(p.values()) for p in self.policies)) or bool(
            self.funded or any(n.staked for n in self.nodes.values())
        )


def stake_ledger(events: list[LedgerEvent]) -> StakeLedger:
    """Replay stake, reward and round events (in chain order) into everyone's standing."""
    book = StakeLedger()
    approvers: dict[int, list[str]] = {}
    finalized: set[int] = set()
    claimed: set[tuple[int, str]] = set()
    for event in events:
        args = event.args
        if event.name == "StakePolicySet":
            book.policies.append({k: int(v) for k, v in args.items()})
        elif event.name == "Staked":
            book.node(args["node"]).staked += int(args["amount"])
        elif event.name == "UnstakeRequested":
            book.node(args["node"]).unlock_block = int(args["unlockBlock"])
        elif event.name == "StakeWithdrawn":
            standing = book.node(args["node"])
            standing.withdrawn += int(args["amount"])
            standing.unlock_block = 0
        elif event.name == "RewardsFunded":
            book.funded += int(args["amount"])
        elif event.name == "ForgetSlashed":
            standing = book.node(args["node"])
            standing.slashed += int(args["amount"])
            standing.slashes.append("0x" + bytes(args["requestId"]).hex())
            book.slashed_to_pool += int(args["amount"])
        elif event.name == "RewardClaimed":
            standing = book.node(args["node"])
            standing.claimed += int(args["amount"])
            standing.claimed_rounds.append(int(args["round"]))
            claimed.add((int(args["round"]), args["node"]))
            book.paid += int(args["amount"])
        elif event.name == "RoundApproved":
            approvers.setdefault(int(args["round"]), []).append(args["node"])
            book.node(args["node"]).approved_rounds.append(int(args["round"]))
        elif event.name == "RoundFinalized":
            finalized.add(int(args["round"]))
    # Each finalized, approved, unclaimed round is claimable (its reward is read later).
    for round_number in sorted(finalized):
        for address in approvers.get(round_number, []):
            if (round_number, address) not in claimed:
                book.node(address).claimable_rounds.append(round_number)
    return book


def read_stake_ledger(ledger: Ledger) -> StakeLedger:
    """Everyone's standing on ``ledger``'s contract, claimable amounts included.

    A round's reward is fixed at proposal and not in its event, so it is read per claimable
    round (one view call each; a node that claims regularly has few).
    """
    book = stake_ledger(ledger.events(EVENTS))
    rewards: dict[int, int] = {}
    for standing in book.nodes.values():
        for round_number in standing.claimable_rounds:
            if round_number not in rewards:
                rewards[round_number] = ledger.round_reward(round_number)
        standing.claimable_rounds = [r for r in standing.claimable_rounds if rewards[r] > 0]
        standing.claimable = sum(rewards[r] for r in standing.claimable_rounds)
    return book
