"""The secure-sum round end to end: correctness, dropouts, corruption and misrouting."""

import contextlib
import re
import struct
from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest
import shamirs
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.secagg_demo import secagg_demo
from protocol import masking
from protocol import secure_sum as ss
from protocol.envelope import generate_private_key, open_envelope, public_key_bytes
from protocol.errors import ProtocolError
from protocol.field import FixedPoint, P
from protocol.shamir import InconsistentSharesError

Contributions = dict[str, ss.Contribution]


def federation(
    n: int, t: int | None = None, *, round_: int = 1, xs: Sequence[int] | None = None
) -> tuple[ss.Roster, dict[str, X25519PrivateKey]]:
    keys = {f"node-{i}": generate_private_key() for i in range(1, n + 1)}
    members = tuple(
        ss.Member(node_id, x, public_key_bytes(key))
        for (node_id, key), x in zip(keys.items(), xs or range(1, n + 1), strict=True)
    )
    threshold = ss.default_threshold(n) if t is None else t
    return ss.Roster("fed-test", round_, threshold, members), keys


def share_all(
    roster: ss.Roster,
    keys: dict[str, X25519PrivateKey],
    vectors: dict[str, np.ndarray],
    weights: dict[str, float],
    fp: FixedPoint,
    masked_with: Sequence[str] | None = None,
) -> Contributions:
    """Stage 2 for every node in ``vectors``, each masking with ``masked_with`` (default:
    the nodes of ``vectors``, i.e. a node missing from it dropped before the round's set)."""
    senders = list(vectors) if masked_with is None else list(masked_with)
    return {
        node: ss.mask_and_share(
            roster, node, keys[node], vec, weight=weights[node], fixed_point=fp, senders=senders
        )
        for node, vec in vectors.items()
    }


def inbox(contributions: Contributions, recipient: str) -> dict[str, bytes]:
    """What the coordinator routes to ``recipient``: every sender's envelope addressed to it."""
    return {sender: sent.envelopes[recipient] for sender, sent in contributions.items()}


def masked_of(contributions: Contributions) -> dict[str, ss.MaskedInput]:
    """The masked inputs as the coordinator receives them, through the wire encoding."""
    return {k: ss.MaskedInput.from_bytes(c.masked.to_bytes()) for k, c in contributions.items()}


def sum_all(
    roster: ss.Roster,
    keys: dict[str, X25519PrivateKey],
    contributions: Contributions,
    responders: Sequence[str],
    masked_with: Sequence[str] | None = None,
) -> list[ss.Reveal]:
    """Stage 3 at each responder, through the wire encoding the coordinator would receive."""
    senders = sorted(contributions)
    return [
        ss.Reveal.from_bytes(
            ss.reveal(
                roster,
                node,
                keys[node],
                inbox(contributions, node),
                senders=senders,
                masked_with=senders if masked_with is None else masked_with,
            ).to_bytes()
        )
        for node in responders
    ]


def random_round(
    roster: ss.Roster, d: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    rng = np.random.default_rng(seed)
    vectors = {m.node_id: rng.normal(0.0, 2.0, d) for m in roster.members}
    counts = rng.integers(1, 500, roster.n)
    weights = {
        m.node_id: float(c / counts.sum()) for m, c in zip(roster.members, counts, strict=True)
    }
    return vectors, weights


def weighted_sum(vectors: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    total = np.zeros_like(next(iter(vectors.values())))
    for node, vector in vectors.items():
        total += weights[node] * vector
    return total


def unmask(
    roster: ss.Roster,
    contributions: Contributions,
    reveals: list[ss.Reveal],
    fp: FixedPoint,
) -> np.ndarray:
    """Stage 4 over the senders the reveals name."""
    masked = masked_of(contributions)
    return ss.reconstruct_sum(roster, {s: masked[s] for s in reveals[0].senders}, reveals, fp)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 6).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))),
    st.integers(1, 24),
    st.integers(0, 2**32 - 1),
)
def test_every_t_subset_of_reveals_gives_the_weighted_sum(
    nt: tuple[int, int], d: int, seed: int
) -> None:
    n, t = nt
    roster, keys = federation(n, t)
    fp = FixedPoint.for_parties(n, clip=8.0)
    vectors, weights = random_round(roster, d, seed)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, list(keys))
    expected = weighted_sum(vectors, weights)
    for subset in combinations(reveals, t):
        got = unmask(roster, sent, list(subset), fp)
        assert np.abs(got - expected).max() <= fp.max_sum_error(n) + 1e-12
    assert np.abs(unmask(roster, sent, reveals, fp) - expected).max() <= fp.max_sum_error(n) + 1e-12


def test_model_sized_round_is_exact_to_the_documented_bound() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 384 * 3 + 3, seed=1)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, list(keys))
    error = np.abs(unmask(roster, sent, reveals, fp) - weighted_sum(vectors, weights)).max()
    assert error <= fp.max_sum_error(5)


def test_a_node_uploads_one_masked_vector_and_small_envelopes() -> None:
    """The issue's target: about 4·d bytes per node, not n·4·d."""
    roster, keys = federation(10)
    fp = FixedPoint.for_parties(10)
    d = 20_000
    vectors, weights = random_round(roster, d, seed=30)
    sent = share_all(roster, keys, vectors, weights, fp)["node-1"]
    uploaded = len(sent.masked.to_bytes()) + sum(len(e) for e in sent.envelopes.values())
    assert 4 * d < uploaded <= 1.5 * 4 * d


def test_masked_vector_looks_uniform_and_hides_the_model() -> None:
    roster, keys = federation(3)
    fp = FixedPoint.for_parties(3)
    d = 50_000
    zeros = {k: np.zeros(d) for k in keys}
    sent = share_all(roster, keys, zeros, dict.fromkeys(keys, 1.0), fp)
    values = sent["node-1"].masked.values
    # A zero model quantises to zeros; masked, its residues spread evenly over GF(p).
    counts, _ = np.histogram(values, bins=16, range=(0, P))
    assert counts.min() > 0.9 * d / 16 and counts.max() < 1.1 * d / 16
    again = share_all(roster, keys, zeros, dict.fromkeys(keys, 1.0), fp)
    assert not np.array_equal(again["node-1"].masked.values, values)  # fresh self mask


def test_round_survives_n_minus_t_nodes_missing_from_the_sender_set() -> None:
    roster, keys = federation(7)  # t = 4
    fp = FixedPoint.for_parties(7)
    vectors, weights = random_round(roster, 50, seed=2)
    dropped = ["node-2", "node-5", "node-6"]
    responders = [k for k in keys if k not in dropped]
    vectors = {k: v for k, v in vectors.items() if k in responders}
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, responders)
    assert all(r.senders == tuple(sorted(responders)) for r in reveals)
    got = unmask(roster, sent, reveals, fp)
    assert np.abs(got - weighted_sum(vectors, weights)).max() <= fp.max_sum_error(7)


def test_round_survives_n_minus_t_dropouts_after_stage_2() -> None:
    roster, keys = federation(7)
    fp = FixedPoint.for_parties(7)
    vectors, weights = random_round(roster, 50, seed=3)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, ["node-1", "node-3", "node-4", "node-7"])
    got = unmask(roster, sent, reveals, fp)  # all 7 models, from 4 reveals
    assert np.abs(got - weighted_sum(vectors, weights)).max() <= fp.max_sum_error(7)


def test_senders_lost_mid_share_are_unmasked_from_pair_seeds_even_with_later_dropouts() -> None:
    """Masked with 7, two never upload: the others' pair masks with them are removed from
    shares of the pair seeds, by any t of the survivors (one more drops at stage 3)."""
    roster, keys = federation(7)  # t = 4
    fp = FixedPoint.for_parties(7)
    vectors, weights = random_round(roster, 60, seed=13)
    everyone = list(keys)
    sent = share_all(roster, keys, vectors, weights, fp, masked_with=everyone)
    arrived = {k: c for k, c in sent.items() if k not in ("node-2", "node-6")}
    reveals = sum_all(roster, keys, arrived, ["node-1", "node-3", "node-4", "node-5"], everyone)
    got = unmask(roster, arrived, reveals, fp)
    expected = weighted_sum({k: vectors[k] for k in arrived}, weights)
    assert np.abs(got - expected).max() <= fp.max_sum_error(7)


def test_fewer_than_t_responders_cannot_reconstruct() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 10, seed=4)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, ["node-1", "node-2"])
    with pytest.raises(ProtocolError, match="reconstruction needs t=3"):
        unmask(roster, sent, reveals, fp)


def test_corrupt_reveal_is_detected_and_its_node_named() -> None:
    roster, keys = federation(6)  # t = 4, 6 answers: enough to single out one culprit
    fp = FixedPoint.for_parties(6)
    vectors, weights = random_round(roster, 40, seed=5)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, list(keys))
    reveals[2].values[17] = (reveals[2].values[17] + 12345) % P
    with pytest.raises(InconsistentSharesError, match=r"reveal of node-3 \(x=3\) is corrupt"):
        unmask(roster, sent, reveals, fp)
    ok = [r for r in reveals if r.node_id != "node-3"]
    np.testing.assert_allclose(
        unmask(roster, sent, ok, fp), weighted_sum(vectors, weights), atol=fp.max_sum_error(6)
    )


def test_corrupt_reveal_among_exactly_t_fails_on_the_commitment() -> None:
    """With t reveals any values interpolate; the seed commitments still catch it."""
    roster, keys = federation(5)  # t = 3
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 40, seed=14)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, ["node-1", "node-2", "node-4"])
    reveals[1].values[0] = (reveals[1].values[0] + 1) % P
    with pytest.raises(ProtocolError, match="does not match its commitment"):
        unmask(roster, sent, reveals, fp)


def test_masked_input_with_a_swapped_commitment_fails_the_round() -> None:
    roster, keys = federation(4)
    fp = FixedPoint.for_parties(4)
    vectors, weights = random_round(roster, 40, seed=15)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, list(keys))
    masked = masked_of(sent)
    masked["node-2"] = replace(masked["node-2"], self_commitment="0x" + "00" * 32)
    with pytest.raises(ProtocolError, match=r"self mask seed of node-2 .* commitment"):
        ss.reconstruct_sum(roster, masked, reveals, fp)


def test_reveals_over_different_sender_sets_are_not_mixed() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 10, seed=6)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, ["node-1", "node-2"])
    # The coordinator hides node-5's envelope from node-3 only.
    partial = {k: v for k, v in inbox(sent, "node-3").items() if k != "node-5"}
    reveals.append(
        ss.reveal(
            roster, "node-3", keys["node-3"], partial, senders=list(partial), masked_with=list(keys)
        )
    )
    with pytest.raises(ProtocolError, match="different sender sets"):
        ss.reconstruct_sum(roster, masked_of(sent), reveals, fp)


def test_node_detects_envelopes_missing_from_the_declared_sender_set() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 10, seed=7)
    sent = share_all(roster, keys, vectors, weights, fp)
    partial = {k: v for k, v in inbox(sent, "node-3").items() if k != "node-5"}
    with pytest.raises(ProtocolError, match=r"missing \['node-5'\]"):
        ss.reveal(
            roster, "node-3", keys["node-3"], partial, senders=list(keys), masked_with=list(keys)
        )


def test_node_refuses_to_reveal_for_fewer_than_t_contributions() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 10, seed=8)
    sent = share_all(roster, keys, vectors, weights, fp)
    only_two = {k: v for k, v in inbox(sent, "node-1").items() if k in ("node-1", "node-4")}
    with pytest.raises(ProtocolError, match="could expose an individual model"):
        ss.reveal(
            roster, "node-1", keys["node-1"], only_two, senders=only_two, masked_with=list(keys)
        )


def test_misaddressed_envelope_is_rejected() -> None:
    roster, keys = federation(3)
    fp = FixedPoint.for_parties(3)
    vectors, weights = random_round(roster, 10, seed=9)
    sent = share_all(roster, keys, vectors, weights, fp)
    routed = inbox(sent, "node-1")
    routed["node-2"] = sent["node-2"].envelopes["node-3"]  # node-3's share handed to node-1
    with pytest.raises(ProtocolError, match=r"node-2 -> node-3.*presented as node-2 -> node-1"):
        ss.reveal(roster, "node-1", keys["node-1"], routed, senders=keys, masked_with=keys)


def test_envelopes_replayed_from_an_earlier_round_are_rejected() -> None:
    roster, keys = federation(3, round_=1)
    fp = FixedPoint.for_parties(3)
    vectors, weights = random_round(roster, 10, seed=10)
    old = share_all(roster, keys, vectors, weights, fp)
    next_round = ss.Roster(roster.federation_id, 2, roster.threshold, roster.members)
    fresh = share_all(next_round, keys, vectors, weights, fp)
    routed = inbox(fresh, "node-1")
    routed["node-3"] = old["node-3"].envelopes["node-1"]
    with pytest.raises(ProtocolError, match=r"round 1 .* presented as .* round 2"):
        ss.reveal(next_round, "node-1", keys["node-1"], routed, senders=keys, masked_with=keys)
    reveals_old = sum_all(roster, keys, old, list(keys))
    with pytest.raises(ProtocolError, match=r"is for round 1 .* not round 2"):
        ss.reconstruct_sum(next_round, masked_of(fresh), reveals_old, fp)
    reveals_new = sum_all(next_round, keys, fresh, list(keys))
    with pytest.raises(ProtocolError, match="masked input of node-1 is not its own"):
        ss.reconstruct_sum(next_round, masked_of(old), reveals_new, fp)


def test_shamirs_package_and_an_independent_unmasking_agree_with_ours() -> None:
    """Independent check: the ``shamirs`` package interpolates each self-mask seed from our
    reveals, and removing the masks by hand from the masked vectors gives the plain sum."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 30, seed=11)
    sent = share_all(roster, keys, vectors, weights, fp)
    reveals = sum_all(roster, keys, sent, list(keys))
    quantised = [fp.quantize(weights[k] * vectors[k]).tolist() for k in keys]
    expected = [sum(column) % P for column in zip(*quantised, strict=True)]  # Python ints
    subset = reveals[: roster.threshold]
    total = [0] * 30
    for k, node in enumerate(sorted(keys)):
        digits = [
            shamirs.interpolate(
                [shamirs.share(r.x, int(r.values[9 * k + i]), P) for r in subset],
                threshold=roster.threshold,
            )
            for i in range(9)
        ]
        seed = sum(digit << (30 * i) for i, digit in enumerate(digits)).to_bytes(32, "big")
        stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), None).encryptor()
        words = [w & P for w in struct.unpack("<64I", stream.update(bytes(256)))]
        mask = [w for w in words if w != P][:30]
        for c in range(30):
            total[c] = (total[c] + int(sent[node].masked.values[c]) - mask[c]) % P
    assert total == expected


def test_large_x_coordinates_work_end_to_end() -> None:
    roster, keys = federation(4, xs=[P - 1, P - 2, 7, 2**30])
    fp = FixedPoint.for_parties(4)
    vectors, weights = random_round(roster, 20, seed=12)
    sent = share_all(roster, keys, vectors, weights, fp)
    got = unmask(roster, sent, sum_all(roster, keys, sent, list(keys)), fp)
    assert np.abs(got - weighted_sum(vectors, weights)).max() <= fp.max_sum_error(4)


def test_contributions_beyond_clip_are_clipped_in_the_sum() -> None:
    roster, keys = federation(3)
    fp = FixedPoint(clip=1.0, frac_bits=16)
    vectors = {k: np.array([5.0, -5.0, 0.25]) for k in keys}
    weights = dict.fromkeys(keys, 1.0)
    sent = share_all(roster, keys, vectors, weights, fp)
    got = unmask(roster, sent, sum_all(roster, keys, sent, list(keys)), fp)
    assert got.tolist() == [3.0, -3.0, 0.75]


def test_code_too_fine_for_the_roster_is_refused_before_sharing() -> None:
    roster, keys = federation(10)
    too_fine = FixedPoint.for_parties(5)
    with pytest.raises(ValueError, match=r"FixedPoint\.for_parties"):
        ss.mask_and_share(
            roster,
            "node-1",
            keys["node-1"],
            np.zeros(3),
            weight=0.1,
            fixed_point=too_fine,
            senders=list(keys),
        )


def test_bad_inputs_to_mask_and_share_are_refused() -> None:
    roster, keys = federation(3)
    fp = FixedPoint.for_parties(3)
    ok = {"weight": 0.5, "fixed_point": fp, "senders": list(keys)}
    with pytest.raises(ProtocolError, match="does not match its public key"):
        ss.mask_and_share(roster, "node-1", keys["node-2"], np.zeros(3), **ok)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="not in the roster"):
        ss.mask_and_share(roster, "mallory", keys["node-1"], np.zeros(3), **ok)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight"):
        ss.mask_and_share(
            roster,
            "node-1",
            keys["node-1"],
            np.zeros(3),
            **{**ok, "weight": -1.0},  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="1-D"):
        ss.mask_and_share(roster, "node-1", keys["node-1"], np.zeros((2, 2)), **ok)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="includes it"):
        ss.mask_and_share(
            roster,
            "node-1",
            keys["node-1"],
            np.zeros(3),
            **{**ok, "senders": ["node-2"]},  # type: ignore[arg-type]
        )
    with pytest.raises(ProtocolError, match="not in the roster"):
        ss.mask_and_share(
            roster,
            "node-1",
            keys["node-1"],
            np.zeros(3),
            **{**ok, "senders": ["node-1", "eve"]},  # type: ignore[arg-type]
        )


def test_wire_formats_round_trip_and_reject_garbage() -> None:
    roster, keys = federation(3)
    fp = FixedPoint.for_parties(3)
    vectors, weights = random_round(roster, 5, seed=16)
    sent = share_all(roster, keys, vectors, weights, fp)
    masked = sent["node-1"].masked
    back = ss.MaskedInput.from_bytes(masked.to_bytes())
    assert back.to_bytes() == masked.to_bytes()
    assert back.values.tolist() == masked.values.tolist()
    (reveal,) = sum_all(roster, keys, sent, ["node-2"])
    assert ss.Reveal.from_bytes(reveal.to_bytes()).to_bytes() == reveal.to_bytes()
    wire = masked.to_bytes()
    with pytest.raises(ProtocolError, match="outside GF"):
        ss.MaskedInput.from_bytes(wire[:-4] + b"\xff\xff\xff\x7f")
    with pytest.raises(ProtocolError, match="whole number of uint32"):
        ss.MaskedInput.from_bytes(wire[:-1])
    with pytest.raises(ProtocolError, match="header and values disagree"):
        ss.MaskedInput.from_bytes(wire[:-4])
    with pytest.raises(ProtocolError, match="malformed masked input"):
        ss.MaskedInput.from_bytes(b"\x00\x00")
    with pytest.raises(ProtocolError, match="exactly one seed per other node"):
        ss.MaskedInput.from_bytes(replace(masked, pair_commitments={}).to_bytes())
    with pytest.raises(ProtocolError, match="its sender sets need"):
        ss.Reveal.from_bytes(replace(reveal, senders=("node-1", "node-2")).to_bytes())


def test_roster_is_validated_and_round_trips() -> None:
    roster, _ = federation(3)
    assert ss.Roster.from_bytes(roster.to_bytes()) == roster
    key = roster.members[0].public_key
    cases = [
        ((ss.Member("a", 1, key), ss.Member("a", 2, key)), 1, "unique"),
        ((ss.Member("a", 1, key), ss.Member("b", 1, key)), 1, "distinct"),
        ((ss.Member("a", 0, key),), 1, r"\[1, 2\^31 − 1\)"),
        ((ss.Member("a", 1, key),), 2, r"threshold must be in \[1, 1\]"),
        ((ss.Member("a", 1, b"short"),), 1, "5-byte public key"),
        ((), 1, "no members"),
    ]
    for members, t, message in cases:
        with pytest.raises(ProtocolError, match=message):
            ss.Roster("fed", 1, t, members)
    with pytest.raises(ProtocolError, match="malformed roster"):
        ss.Roster.from_bytes(b'{"federation_id": "fed"}')


def test_demo_runs_a_round_with_dropouts_and_reports_the_error_bound() -> None:
    result = CliRunner().invoke(
        secagg_demo, ["--nodes", "5", "--dim", "300", "--drop", "1", "--drop-before-share", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "node-5   dropped out before sharing" in result.output
    assert "node-4   dropped out after sharing" in result.output
    line = next(x for x in result.output.splitlines() if "max |secure − plaintext|" in x)
    match = re.search(r"= ([0-9.e+-]+) \(bound ([0-9.e+-]+)\)", line)
    assert match is not None and float(match[1]) <= float(match[2])


def test_demo_fails_clearly_when_fewer_than_t_nodes_answer() -> None:
    result = CliRunner().invoke(secagg_demo, ["--nodes", "5", "--dim", "10", "--drop", "3"])
    assert result.exit_code == 1
    assert "the round failed" in result.output and "needs t=3" in result.output


# -- attacks: what the coordinator, alone or with t − 1 nodes, can get --------------------


def _is_model(estimate: np.ndarray, model: np.ndarray, fp: FixedPoint) -> bool:
    return bool(np.abs(estimate - model).max() < 1e-3)


def _signed_mask(seed: bytes, d: int, owner: str, peer: str) -> np.ndarray:
    """What ``owner`` added to its masked vector for its pair mask with ``peer``."""
    mask = masking.expand(seed, d)
    return mask if owner.lower() < peer.lower() else (P - mask) % P


@given(st.sets(st.integers(1, 8), min_size=1), st.sets(st.integers(1, 8)))
def test_a_reveal_never_unmasks_one_node_two_ways(senders_: set[int], lost_: set[int]) -> None:
    """Self-mask shares only for the senders, pair seeds only with nodes outside them."""
    senders = [f"n{i}" for i in sorted(senders_)]
    masked_with = sorted(set(senders) | {f"n{i}" for i in lost_})
    layout = ss.reveal_layout(senders, masked_with)
    selves = {owner for owner, peer in layout if peer is None}
    pairs = [(owner, peer) for owner, peer in layout if peer is not None]
    assert selves == set(senders)
    assert all(owner in senders and peer not in senders for owner, peer in pairs)
    assert not selves & {peer for _, peer in pairs}


def test_a_sender_claimed_lost_after_uploading_keeps_its_self_mask() -> None:
    """The coordinator holds the victim's masked vector and tells the others it was lost:
    they reveal the victim's pair seeds, never a share of its self mask."""
    roster, keys = federation(5)  # t = 3
    fp = FixedPoint.for_parties(5)
    d = 200
    vectors, weights = random_round(roster, d, seed=20)
    everyone = list(keys)
    sent = share_all(roster, keys, vectors, weights, fp, masked_with=everyone)
    victim = "node-3"
    others = {k: c for k, c in sent.items() if k != victim}
    reveals = sum_all(roster, keys, others, list(others), everyone)
    layout = ss.reveal_layout(reveals[0].senders, everyone)
    assert (victim, None) not in layout
    # Everything the coordinator can interpolate: every seed of the layout.
    xs = [r.x for r in reveals[:3]]
    seeds = shamir_reconstruct(xs, [r.values for r in reveals[:3]])
    estimate = sent[victim].masked.values.copy()
    for (owner, peer), digits in zip(layout, seeds, strict=True):
        if peer == victim:  # the pair seed the victim shares with ``owner``
            seed = masking.field_to_seed(digits)
            estimate = (estimate - _signed_mask(seed, d, victim, owner)) % P
    model = fp.dequantize(fp.quantize(weights[victim] * vectors[victim]))
    assert not _is_model(fp.dequantize(estimate), model, fp)  # the self mask is still on it
    # The honest sum over the others still comes out: nothing else changed.
    got = unmask(roster, others, reveals, fp)
    expected = weighted_sum({k: vectors[k] for k in others}, weights)
    assert np.abs(got - expected).max() <= fp.max_sum_error(5)


def test_t_minus_one_colluders_and_the_coordinator_cannot_unmask_one_model() -> None:
    """Two colluders (t − 1 of five) pool everything they hold about the victim with the
    coordinator's view of an honest round: its masked vector, its self mask (revealed,
    since the victim is in the sum) and their own pair seeds with it. The pair masks with
    the two honest nodes stay on; their t − 1 shares of those seeds interpolate to junk."""
    roster, keys = federation(5)  # t = 3
    fp = FixedPoint.for_parties(5)
    d = 200
    vectors, weights = random_round(roster, d, seed=21)
    sent = share_all(roster, keys, vectors, weights, fp)
    victim, colluders = "node-3", ["node-1", "node-2"]
    reveals = sum_all(roster, keys, sent, list(keys))
    layout = ss.reveal_layout(reveals[0].senders, list(keys))
    seeds = shamir_reconstruct([r.x for r in reveals[:3]], [r.values for r in reveals[:3]])
    self_seed = masking.field_to_seed(seeds[layout.index((victim, None))])
    estimate = (sent[victim].masked.values - masking.expand(self_seed, d)) % P
    for c in colluders:  # the colluders' own pair seeds with the victim
        seed = masking.pair_seed(
            keys[c], roster.member(victim).public_key, ss._pair_context(roster, c, victim)
        )
        estimate = (estimate - _signed_mask(seed, d, victim, c)) % P
    # Their t − 1 shares of the victim's pair seeds with the honest nodes.
    held = []
    for c in colluders:
        plain = open_envelope(
            keys[c],
            roster.member(victim).public_key,
            sent[victim].envelopes[c],
            context=ss.envelope_context(roster, victim, c),
        )
        held.append(np.frombuffer(plain, dtype=ss.WIRE_DTYPE).astype(np.int64))
    guess = shamir_reconstruct([roster.member(c).x for c in colluders], held)
    for peer in ("node-4", "node-5"):
        digits = guess[1 + [k for k in keys if k != victim].index(peer)]
        with contextlib.suppress(ProtocolError):
            seed = masking.field_to_seed(digits)
            assert (
                masking.commitment(seed, ss._commit_context(roster, victim, peer))
                != sent[victim].masked.pair_commitments[peer]
            )
            estimate = (estimate - _signed_mask(seed, d, victim, peer)) % P
    model = fp.dequantize(fp.quantize(weights[victim] * vectors[victim]))
    assert not _is_model(fp.dequantize(estimate), model, fp)


def shamir_reconstruct(xs: list[int], rows: list[np.ndarray]) -> np.ndarray:
    """Interpolate at 0 and cut into seeds of nine digits (what any t − 1 or t holders do)."""
    from protocol.shamir import reconstruct

    return reconstruct(xs, rows).reshape(-1, masking.SEED_DIGITS)
