"""A node's signed records root for tests that open forget requests on a real chain.

``requestForget`` takes a proof that the node committed to the record under the records root
it signed for a finalized round (``protocol.records_root``); these helpers sign one with the
node's own key, as its train reply does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from protocol.hashing import keccak256
from protocol.ledger import Ledger, TxResult
from protocol.records_root import RecordsProof, RecordsRoot
from protocol.typed_data import Domain

if TYPE_CHECKING:
    from tests.chain_fixtures import Federation


def committed(
    node: Ledger,
    private_key: str | bytes,
    commitment: bytes,
    round_number: int,
    others: Sequence[bytes] = (),
) -> RecordsProof:
    """``node``'s records root of ``round_number`` over ``commitment`` (and ``others``),
    naming its certification count on chain now, and the commitment's proof under it."""
    address = str(node.account)
    records = RecordsRoot.of(round_number, [commitment, *others], node.certifications_of(address))
    return records.proof(commitment, records.sign(Domain.of(node), private_key))


def finalize_next_round(chain: Federation) -> int:
    """Propose the chain's next round and have every node approve it; return its number."""
    round_number = chain.owner.last_round() + 1
    model, root = keccak256(b"model %d" % round_number), keccak256(b"root %d" % round_number)
    chain.coordinator.propose_round(round_number, model, "bafy-model", root, "bafy-manifest")
    for node in chain.nodes:
        node.approve_round(round_number, model, root)
    return round_number


def request_committed(
    chain: Federation,
    request_id: bytes | str,
    commitment: bytes,
    node: Ledger,
    private_key: str | bytes,
    round_number: int | None = None,
) -> TxResult:
    """Open a request naming ``node`` for ``commitment``, under a records root ``node`` signed
    with ``private_key`` for ``round_number`` (default: the chain's last round, finalized)."""
    round_number = round_number or chain.owner.last_round()
    proof = committed(node, private_key, commitment, round_number)
    return chain.coordinator.request_forget(request_id, commitment, str(node.account), proof)
