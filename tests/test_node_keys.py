"""Share keys no participant can turn against a round: refused on chain, or left out alike.

Real contract on anvil, real node handlers over the in-memory transport.

Specifications (docs/trust.md, "Keys"):
- ``registerKey`` refuses every small-order u-coordinate of X25519 and every non-canonical
  encoding (u >= 2^255 - 19), and accepts real keys; the node's own check agrees exactly;
- each refused small-order u really yields no shared secret (checked with the X25519
  implementation the nodes use), so the list is the one that matters;
- a member whose key is unusable (registered on a contract before this check) is left out
  of the round by every node alike, and the round finalizes without it;
- a member rotating its key between ``share`` and ``aggregate`` does not fail the round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocol.envelope import (
    SMALL_ORDER_U,
    generate_private_key,
    public_key_bytes,
    usable_public_key,
)
from protocol.hashing import keccak256
from protocol.ledger import ContractRevert

if TYPE_CHECKING:
    from coordinator.rounds import RoundState
    from launcher.devnet import Devnet
    from tests.chain_fixtures import Federation
    from tests.round_fixtures import MakeFederation, MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]

P = 2**255 - 19
NODE_KEY_SLOT = 5
"""Storage slot of the contract's ``nodeKey`` mapping (checked by reading it back)."""


def _u(value: int) -> bytes:
    return (value % 2**256).to_bytes(32, "little")


REFUSED = {
    **{f"small order u={u}": _u(u) for u in sorted(SMALL_ORDER_U)},
    "u = p": _u(P),
    "u = p + 1": _u(P + 1),
    "u = 2^255 - 1": _u(2**255 - 1),
    "top bit set on a real key": (lambda k: k[:31] + bytes([k[31] | 0x80]))(
        public_key_bytes(generate_private_key())
    ),
}


@pytest.mark.parametrize("name", sorted(SMALL_ORDER_U))
def test_each_small_order_u_gives_no_shared_secret(name: int) -> None:
    with pytest.raises(ValueError):
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(_u(name)))


def test_register_key_refuses_small_order_and_non_canonical_keys(federation: Federation) -> None:
    node = federation.nodes[0]
    for name, key in REFUSED.items():
        assert not usable_public_key(key), name
        with pytest.raises(ContractRevert) as excinfo:
            node.register_key(key)
        assert excinfo.value.error_name == "InvalidKey", name
    real = public_key_bytes(generate_private_key())
    assert usable_public_key(real)
    node.register_key(real)
    assert node.roster()[0].key == real


def _force_key(devnet: Devnet, fed: MemoryFederation, node: NodeHandle, key: bytes) -> None:
    """Write ``key`` as the node's registered key, as an older contract would have let it."""
    address = bytes.fromhex(node.address[2:])
    slot = keccak256(address.rjust(32, b"\0") + NODE_KEY_SLOT.to_bytes(32, "big"))
    reply = requests.post(
        devnet.rpc_url,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "anvil_setStorageAt",
            "params": [fed.chain.deployment.address, "0x" + slot.hex(), "0x" + key.hex()],
        },
        timeout=10,
    )
    assert "error" not in reply.json(), reply.text
    raw = fed.chain.owner._call("nodeKey", node.address)
    assert bytes(raw) == key, "the nodeKey slot moved: update NODE_KEY_SLOT"


def test_a_member_with_an_unusable_key_is_left_out_and_the_round_finalizes(
    devnet: Devnet, memory_federation_of: MakeFederation
) -> None:
    fed = memory_federation_of(4)
    bad = fed.nodes[3]
    _force_key(devnet, fed, bad, _u(1))
    assert [e.key for e in fed.chain.owner.roster()][3] is None

    outcome = fed.coordinator.run_round(None)

    assert outcome.finalized, fed.lines
    assert outcome.manifest is not None
    summed = {u.address.lower() for u in outcome.manifest.updates}
    assert bad.address.lower() not in summed
    assert {n.address.lower() for n in fed.nodes[:3]} <= summed


def test_a_key_rotated_between_share_and_aggregate_does_not_fail_the_round(
    memory_federation: MemoryFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = memory_federation
    coordinator = fed.coordinator
    aggregate = coordinator.aggregate_stage
    rotated = public_key_bytes(generate_private_key())

    def rotate_then_aggregate(state: RoundState) -> None:
        fed.nodes[0].runtime.ledger.register_key(rotated)
        aggregate(state)

    monkeypatch.setattr(coordinator, "aggregate_stage", rotate_then_aggregate)
    outcome = coordinator.run_round(None)
    assert fed.chain.owner.roster()[0].key == rotated
    assert outcome.finalized, fed.lines
