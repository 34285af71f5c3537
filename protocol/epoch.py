"""The roster epoch: which federation membership a node's models were trained for.

A node whose model is unchanged may not be summed into another sender set (docs/trust.md,
rule 5), so after an admission or a removal the old members could never sum with the new
roster. Instead every node binds its SISA seeds and checkpoint lineages to the epoch, the
digest of the chain's registered roster (addresses, x-coordinates, X25519 keys), and
retrains its shard when the chain's roster moves on: every model in the new roster's first
sum is new, and the differencing rule lets it through. Nodes derive the epoch from the
chain themselves; a coordinator naming another one is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from protocol.canonical import canonical_json
from protocol.hashing import keccak256

if TYPE_CHECKING:
    from protocol.ledger import RosterEntry

_EPOCH_DOMAIN = b"lethe/roster-epoch/v1\x00"


def roster_epoch(members: Iterable[tuple[str, int, bytes]]) -> bytes:
    """keccak256 of the registered roster as (address, Shamir x, X25519 key), order-free."""
    canonical = sorted((address.lower(), x, "0x" + key.hex()) for address, x, key in members)
    return keccak256(_EPOCH_DOMAIN + canonical_json(canonical))


def chain_members(entries: Iterable[RosterEntry]) -> list[tuple[str, int, bytes]]:
    """The round's members from the contract's roster: admitted nodes with a registered key,
    at x = their index in the contract's list + 1 (the roster every round uses)."""
    return [
        (entry.address, index + 1, entry.key)
        for index, entry in enumerate(entries)
        if entry.key is not None
    ]


def chain_epoch(entries: Iterable[RosterEntry]) -> bytes:
    """The epoch of the contract's current roster (``Ledger.roster()``)."""
    return roster_epoch(chain_members(entries))
