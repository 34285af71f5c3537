"""The roster epoch: which federation membership a node's models were trained for.

A node whose model is unchanged may not be summed into another sender set (docs/trust.md,
rule 5), so after an admission or a removal the old members could never sum with the new
roster. Instead every node binds its SISA seeds and checkpoint lineages to the epoch, the
digest of the chain's registered roster (the addresses of the admitted nodes with a share
key), and retrains its shards when the chain's roster moves on: every model in the new
roster's first sum is new, and the differencing rule lets it through. Nodes derive the
epoch from the chain themselves; a coordinator naming another one is refused.

The epoch covers addresses only, not keys: the differencing rule is about who is summed,
and a key rotation changes no sender set. Two federations with the same members, on the
same data, therefore train the same bytes (the end-to-end exactness test relies on it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from protocol.canonical import canonical_json
from protocol.hashing import keccak256

if TYPE_CHECKING:
    from protocol.ledger import RosterEntry

_EPOCH_DOMAIN = b"lethe/roster-epoch/v1\x00"


def roster_epoch(addresses: Iterable[str]) -> bytes:
    """keccak256 of the set of roster addresses (lower-cased, sorted)."""
    return keccak256(_EPOCH_DOMAIN + canonical_json(sorted(a.lower() for a in addresses)))


def chain_epoch(entries: Iterable[RosterEntry]) -> bytes:
    """The epoch of the contract's current roster (``Ledger.roster()``): the admitted nodes
    with a registered share key, as every round's roster has them."""
    return roster_epoch(e.address for e in entries if e.key is not None)
