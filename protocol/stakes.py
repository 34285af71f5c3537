"""Who staked, earned, claimed and was slashed: replayed from the contract's events.

The contract keeps no per-node list of rounds (that would be a loop over history), so what a
node can still claim is found here: the finalized rounds it approved whose reward it has not
claimed. The same replay serves the node's command line, the audit (which also asks it
whether each stake event is one the contract's rules allow) and the explorer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

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
CONTEXT_EVENTS = (
    "RoundProposed",
    "RoundApproved",
    "RoundApprovedBy",
    "RoundFinalized",
    "ForgetRequested",
    "ForgetCertified",
)
"""Events of the rest of the protocol that rewards and slashes depend on."""
EVENTS = (*STAKE_EVENTS, *CONTEXT_EVENTS)


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
    return f"{format(ether.normalize(), 'f')} ETH"


@dataclass
class NodeStanding:
    """One node's account with the federation, in wei."""

    address: str
    stake: int = 0
    slashed: int = 0
    slashes: list[str] = field(default_factory=list)  # request ids, 0x-hex
    claimed: int = 0
    claimed_rounds: list[int] = field(default_factory=list)
    claimable: int = 0
    claimable_rounds: list[int] = field(default_factory=list)
    unlock_block: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "stake_wei": self.stake,
            "slashed_wei": self.slashed,
            "slashed_requests": list(self.slashes),
            "rewards_claimed_wei": self.claimed,
            "rewards_claimable_wei": self.claimable,
            "claimable_rounds": list(self.claimable_rounds),
            "unlock_block": self.unlock_block,
        }


@dataclass
class _Request:
    node: str
    deadline: bool
    certified: bool = False
    slashed: bool = False


@dataclass
class StakeLedger:
    """Everyone's standing, the pool and the policy, as the events so far make them.

    :meth:`apply` takes every event of :data:`EVENTS` in chain order and returns what, if
    anything, the contract's rules forbid in it (the audit reports that as a failure).
    """

    nodes: dict[str, NodeStanding] = field(default_factory=dict)
    policy: dict[str, int] = field(default_factory=dict)
    funded: int = 0
    slashed: int = 0
    paid: int = 0
    _round_reward: dict[int, int] = field(default_factory=dict)
    _approvers: dict[int, list[str]] = field(default_factory=dict)
    _finalized: set[int] = field(default_factory=set)
    _claimed: set[tuple[int, str]] = field(default_factory=set)
    _requests: dict[str, _Request] = field(default_factory=dict)

    @property
    def pool(self) -> int:
        """Funded plus slashed, minus paid: what the contract's ``rewardPool`` must read."""
        return self.funded + self.slashed - self.paid

    @property
    def in_use(self) -> bool:
        """Whether the federation uses stakes or rewards at all (else views skip them)."""
        return any(self.policy.values()) or bool(self.funded or self.nodes)

    def node(self, address: str) -> NodeStanding:
        return self.nodes.setdefault(address, NodeStanding(address))

    def apply(self, event: LedgerEvent) -> str | None:
        """Replay one event; return why the contract could not have emitted it, if so."""
        handler = getattr(self, "_on_" + event.name, None)
        return None if handler is None else handler(event.args)

    def settle(self, rewards: dict[int, int] | None = None) -> StakeLedger:
        """Fill each node's claimable rounds: finalized, approved by it, not yet claimed."""
        rewards = self._round_reward if rewards is None else rewards
        for standing in self.nodes.values():
            standing.claimable_rounds, standing.claimable = [], 0
        for round_number in sorted(self._finalized):
            reward = rewards.get(round_number, 0)
            for address in self._approvers.get(round_number, []):
                if reward and (round_number, address) not in self._claimed:
                    standing = self.node(address)
                    standing.claimable_rounds.append(round_number)
                    standing.claimable += reward
        return self

    def summary(self) -> dict[str, Any]:
        """Plain JSON form: the policy, the pool's flows, and every node's standing."""
        return {
            "policy": dict(self.policy),
            "funded_wei": self.funded,
            "slashed_wei": self.slashed,
            "paid_wei": self.paid,
            "pool_wei": self.pool,
            "nodes": [s.as_dict() for s in self.nodes.values()],
        }

    # -- one handler per event -------------------------------------------------------------

    def _on_StakePolicySet(self, a: dict[str, Any]) -> None:
        self.policy = {k: int(v) for k, v in a.items()}

    def _on_Staked(self, a: dict[str, Any]) -> str | None:
        standing = self.node(a["node"])
        standing.stake += int(a["amount"])
        if standing.stake != int(a["total"]):
            return f"says the stake is now {a['total']} wei, the history makes it {standing.stake}"
        return None

    def _on_UnstakeRequested(self, a: dict[str, Any]) -> None:
        self.node(a["node"]).unlock_block = int(a["unlockBlock"])

    def _on_StakeWithdrawn(self, a: dict[str, Any]) -> str | None:
        standing = self.node(a["node"])
        held, standing.stake, asked = standing.stake, 0, standing.unlock_block
        standing.unlock_block = 0
        if not asked:
            return f"{a['node']} withdrew without asking to unstake"
        if int(a["amount"]) != held:
            return f"{a['node']} withdrew {a['amount']} wei, its stake was {held}"
        return None

    def _on_RewardsFunded(self, a: dict[str, Any]) -> None:
        self.funded += int(a["amount"])

    def _on_RewardClaimed(self, a: dict[str, Any]) -> str | None:
        round_number, address, amount = int(a["round"]), str(a["node"]), int(a["amount"])
        standing = self.node(address)
        standing.claimed += amount
        standing.claimed_rounds.append(round_number)
        self.paid += amount
        who = f"{address}'s reward for round {round_number}"
        if round_number not in self._finalized:
            return f"{who} was paid before the round was finalized"
        if address not in self._approvers.get(round_number, []):
            return f"{who} was paid, but it never approved the round"
        if (round_number, address) in self._claimed:
            return f"{who} was paid twice"
        self._claimed.add((round_number, address))
        if amount != self._round_reward.get(round_number, 0):
            expected = self._round_reward.get(round_number, 0)
            return f"{who} was {amount} wei, the policy at proposal said {expected}"
        if self.pool < 0:
            return f"{who} took the pool below zero (funded and slashed: {self.pool + self.paid})"
        return None

    def _on_ForgetSlashed(self, a: dict[str, Any]) -> str | None:
        request_id = "0x" + bytes(a["requestId"]).hex()
        address, amount = str(a["node"]), int(a["amount"])
        standing = self.node(address)
        due = min(self.policy.get("slashAmount", 0), standing.stake)
        standing.stake -= amount
        standing.slashed += amount
        standing.slashes.append(request_id)
        self.slashed += amount
        request = self._requests.get(request_id)
        if request is None or request.node != address:
            return f"slashed {address} for {request_id}, a request that does not name it"
        if not request.deadline:
            return f"slashed {address} for {request_id}, a request with no deadline"
        if request.slashed or request.certified:
            return f"slashed {address} for {request_id} after it was slashed or certified"
        request.slashed = True
        if amount != due:
            return f"slashed {address} {amount} wei for {request_id}, the policy says {due}"
        return None

    def _on_RoundProposed(self, a: dict[str, Any]) -> None:
        self._round_reward[int(a["round"])] = self.policy.get("rewardPerRound", 0)

    def _on_RoundApproved(self, a: dict[str, Any]) -> None:
        self._approvers.setdefault(int(a["round"]), []).append(str(a["node"]))

    def _on_RoundApprovedBy(self, a: dict[str, Any]) -> None:
        self._approvers.setdefault(int(a["round"]), []).extend(str(n) for n in a["nodes"])

    def _on_RoundFinalized(self, a: dict[str, Any]) -> None:
        self._finalized.add(int(a["round"]))

    def _on_ForgetRequested(self, a: dict[str, Any]) -> None:
        deadline = bool(self.policy.get("forgetDeadlineBlocks", 0))
        self._requests["0x" + bytes(a["requestId"]).hex()] = _Request(str(a["node"]), deadline)

    def _on_ForgetCertified(self, a: dict[str, Any]) -> None:
        request = self._requests.get("0x" + bytes(a["requestId"]).hex())
        if request is not None:
            request.certified = True


def stake_ledger(events: list[LedgerEvent]) -> StakeLedger:
    """Replay stake, reward, round and forget events (in chain order), then settle claims."""
    book = StakeLedger()
    for event in events:
        book.apply(event)
    return book.settle()


def read_stake_ledger(ledger: Ledger) -> StakeLedger:
    """Everyone's standing on ``ledger``'s contract, from its events."""
    return stake_ledger(ledger.events(EVENTS))
