"""The secure-sum round end to end: correctness, dropouts, corruption and misrouting."""

import re
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pytest
import shamirs
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.secagg_demo import secagg_demo
from protocol import secure_sum as ss
from protocol.envelope import generate_private_key, public_key_bytes
from protocol.errors import ProtocolError
from protocol.field import FixedPoint, P
from protocol.shamir import InconsistentSharesError

Outboxes = dict[str, dict[str, bytes]]


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
) -> Outboxes:
    """Stage 2 for every node in ``vectors`` (a node missing from it dropped before stage 2)."""
    return {
        node: ss.make_shares(roster, node, keys[node], vec, weight=weights[node], fixed_point=fp)
        for node, vec in vectors.items()
    }


def inbox(outboxes: Outboxes, recipient: str) -> dict[str, bytes]:
    """What the coordinator routes to ``recipient``: every sender's envelope addressed to it."""
    return {sender: sent[recipient] for sender, sent in outboxes.items()}


def sum_all(
    roster: ss.Roster,
    keys: dict[str, X25519PrivateKey],
    outboxes: Outboxes,
    responders: Sequence[str],
) -> list[ss.SummedShare]:
    """Stage 3 at each responder, through the wire encoding the coordinator would receive."""
    return [
        ss.SummedShare.from_bytes(
            ss.open_and_sum(
                roster, node, keys[node], inbox(outboxes, node), senders=sorted(outboxes)
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


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 6).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))),
    st.integers(1, 24),
    st.integers(0, 2**32 - 1),
)
def test_every_t_subset_of_summed_shares_gives_the_weighted_sum(
    nt: tuple[int, int], d: int, seed: int
) -> None:
    n, t = nt
    roster, keys = federation(n, t)
    fp = FixedPoint.for_parties(n, clip=8.0)
    vectors, weights = random_round(roster, d, seed)
    summed = sum_all(roster, keys, share_all(roster, keys, vectors, weights, fp), list(keys))
    expected = weighted_sum(vectors, weights)
    for subset in combinations(summed, t):
        got = ss.reconstruct_sum(roster, list(subset), fp)
        assert np.abs(got - expected).max() <= fp.max_sum_error(n) + 1e-12
    assert (
        np.abs(ss.reconstruct_sum(roster, summed, fp) - expected).max()
        <= fp.max_sum_error(n) + 1e-12
    )


def test_model_sized_round_is_exact_to_the_documented_bound() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 384 * 3 + 3, seed=1)
    summed = sum_all(roster, keys, share_all(roster, keys, vectors, weights, fp), list(keys))
    error = np.abs(ss.reconstruct_sum(roster, summed, fp) - weighted_sum(vectors, weights)).max()
    assert error <= fp.max_sum_error(5)


def test_round_survives_n_minus_t_dropouts_before_stage_3() -> None:
    roster, keys = federation(7)  # t = 4
    fp = FixedPoint.for_parties(7)
    vectors, weights = random_round(roster, 50, seed=2)
    dropped = ["node-2", "node-5", "node-6"]
    responders = [k for k in keys if k not in dropped]
    vectors = {k: v for k, v in vectors.items() if k in responders}
    summed = sum_all(roster, keys, share_all(roster, keys, vectors, weights, fp), responders)
    assert all(s.senders == tuple(sorted(responders)) for s in summed)
    got = ss.reconstruct_sum(roster, summed, fp)
    assert np.abs(got - weighted_sum(vectors, weights)).max() <= fp.max_sum_error(7)


def test_round_survives_n_minus_t_dropouts_after_stage_2() -> None:
    roster, keys = federation(7)
    fp = FixedPoint.for_parties(7)
    vectors, weights = random_round(roster, 50, seed=3)
    outboxes = share_all(roster, keys, vectors, weights, fp)
    summed = sum_all(roster, keys, outboxes, ["node-1", "node-3", "node-4", "node-7"])
    got = ss.reconstruct_sum(roster, summed, fp)  # all 7 models, from 4 summed shares
    assert np.abs(got - weighted_sum(vectors, weights)).max() <= fp.max_sum_error(7)


def test_fewer_than_t_responders_cannot_reconstruct() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 10, seed=4)
    summed = sum_all(
        roster, keys, share_all(roster, keys, vectors, weights, fp), ["node-1", "node-2"]
    )
    with pytest.raises(ProtocolError, match="reconstruction needs t=3"):
        ss.reconstruct_sum(roster, summed, fp)


def test_corrupt_summed_share_is_detected_and_its_node_named() -> None:
    roster, keys = federation(6)  # t = 4, 6 answers: enough to single out one culprit
    fp = FixedPoint.for_parties(6)
    vectors, weights = random_round(roster, 40, seed=5)
    summed = sum_all(roster, keys, share_all(roster, keys, vectors, weights, fp), list(keys))
    summed[2].values[17] = (summed[2].values[17] + 12345) % P
    with pytest.raises(InconsistentSharesError, match=r"summed share of node-3 \(x=3\) is corrupt"):
        ss.reconstruct_sum(roster, summed, fp)
    ok = [s for s in summed if s.node_id != "node-3"]
    np.testing.assert_allclose(
        ss.reconstruct_sum(roster, ok, fp), weighted_sum(vectors, weights), atol=fp.max_sum_error(6)
    )


def test_summed_shares_over_different_sender_sets_are_not_mixed() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 10, seed=6)
    outboxes = share_all(roster, keys, vectors, weights, fp)
    summed = sum_all(roster, keys, outboxes, ["node-1", "node-2"])
    # The coordinator hides node-5's envelope from node-3 only.
    partial = {k: v for k, v in inbox(outboxes, "node-3").items() if k != "node-5"}
    summed.append(ss.open_and_sum(roster, "node-3", keys["node-3"], partial))
    with pytest.raises(ProtocolError, match="different sender sets"):
        ss.reconstruct_sum(roster, summed, fp)


def test_node_detects_envelopes_missing_from_the_declared_sender_set() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 10, seed=7)
    outboxes = share_all(roster, keys, vectors, weights, fp)
    partial = {k: v for k, v in inbox(outboxes, "node-3").items() if k != "node-5"}
    with pytest.raises(ProtocolError, match=r"missing \['node-5'\]"):
        ss.open_and_sum(roster, "node-3", keys["node-3"], partial, senders=list(keys))


def test_node_refuses_to_sum_fewer_than_t_contributions() -> None:
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 10, seed=8)
    outboxes = share_all(roster, keys, vectors, weights, fp)
    only_two = {k: v for k, v in inbox(outboxes, "node-1").items() if k in ("node-1", "node-4")}
    with pytest.raises(ProtocolError, match="could expose an individual model"):
        ss.open_and_sum(roster, "node-1", keys["node-1"], only_two)


def test_misaddressed_envelope_is_rejected() -> None:
    roster, keys = federation(3)
    fp = FixedPoint.for_parties(3)
    vectors, weights = random_round(roster, 10, seed=9)
    outboxes = share_all(roster, keys, vectors, weights, fp)
    routed = inbox(outboxes, "node-1")
    routed["node-2"] = outboxes["node-2"]["node-3"]  # node-3's share handed to node-1
    with pytest.raises(ProtocolError, match=r"node-2 -> node-3.*presented as node-2 -> node-1"):
        ss.open_and_sum(roster, "node-1", keys["node-1"], routed)


def test_envelopes_replayed_from_an_earlier_round_are_rejected() -> None:
    roster, keys = federation(3, round_=1)
    fp = FixedPoint.for_parties(3)
    vectors, weights = random_round(roster, 10, seed=10)
    old = share_all(roster, keys, vectors, weights, fp)
    next_round = ss.Roster(roster.federation_id, 2, roster.threshold, roster.members)
    fresh = share_all(next_round, keys, vectors, weights, fp)
    routed = inbox(fresh, "node-1")
    routed["node-3"] = old["node-3"]["node-1"]
    with pytest.raises(ProtocolError, match=r"round 1 .* presented as .* round 2"):
        ss.open_and_sum(next_round, "node-1", keys["node-1"], routed)
    summed_old = sum_all(roster, keys, old, list(keys))
    with pytest.raises(ProtocolError, match=r"is for round 1 .* not round 2"):
        ss.reconstruct_sum(next_round, summed_old, fp)


def test_shamirs_package_reconstructs_the_sum_from_our_summed_shares() -> None:
    """Independent check at protocol level: the summed shares are standard Shamir points."""
    roster, keys = federation(5)
    fp = FixedPoint.for_parties(5)
    vectors, weights = random_round(roster, 30, seed=11)
    summed = sum_all(roster, keys, share_all(roster, keys, vectors, weights, fp), list(keys))
    quantised = [fp.quantize(weights[k] * vectors[k]).tolist() for k in keys]
    expected = [sum(column) % P for column in zip(*quantised, strict=True)]  # Python ints
    for subset in combinations(summed, roster.threshold):
        for c in (0, 13, 29):
            points = [shamirs.share(s.x, int(s.values[c]), P) for s in subset]
            assert shamirs.interpolate(points, threshold=roster.threshold) == expected[c]


def test_large_x_coordinates_work_end_to_end() -> None:
    roster, keys = federation(4, xs=[P - 1, P - 2, 7, 2**30])
    fp = FixedPoint.for_parties(4)
    vectors, weights = random_round(roster, 20, seed=12)
    summed = sum_all(roster, keys, share_all(roster, keys, vectors, weights, fp), list(keys))
    got = ss.reconstruct_sum(roster, summed, fp)
    assert np.abs(got - weighted_sum(vectors, weights)).max() <= fp.max_sum_error(4)


def test_contributions_beyond_clip_are_clipped_in_the_sum() -> None:
    roster, keys = federation(3)
    fp = FixedPoint(clip=1.0, frac_bits=16)
    vectors = {k: np.array([5.0, -5.0, 0.25]) for k in keys}
    weights = dict.fromkeys(keys, 1.0)
    summed = sum_all(roster, keys, share_all(roster, keys, vectors, weights, fp), list(keys))
    assert ss.reconstruct_sum(roster, summed, fp).tolist() == [3.0, -3.0, 0.75]


def test_code_too_fine_for_the_roster_is_refused_before_sharing() -> None:
    roster, keys = federation(10)
    too_fine = FixedPoint.for_parties(5)
    with pytest.raises(ValueError, match=r"FixedPoint\.for_parties"):
        ss.make_shares(
            roster, "node-1", keys["node-1"], np.zeros(3), weight=0.1, fixed_point=too_fine
        )


def test_bad_inputs_to_make_shares_are_refused() -> None:
    roster, keys = federation(3)
    fp = FixedPoint.for_parties(3)
    with pytest.raises(ProtocolError, match="does not match its public key"):
        ss.make_shares(roster, "node-1", keys["node-2"], np.zeros(3), weight=0.5, fixed_point=fp)
    with pytest.raises(ProtocolError, match="not in the roster"):
        ss.make_shares(roster, "mallory", keys["node-1"], np.zeros(3), weight=0.5, fixed_point=fp)
    with pytest.raises(ValueError, match="weight"):
        ss.make_shares(roster, "node-1", keys["node-1"], np.zeros(3), weight=-1.0, fixed_point=fp)
    with pytest.raises(ValueError, match="1-D"):
        ss.make_shares(
            roster, "node-1", keys["node-1"], np.zeros((2, 2)), weight=0.5, fixed_point=fp
        )


def test_summed_share_wire_format_round_trips_and_rejects_garbage() -> None:
    share = ss.SummedShare("fed", 3, "node-1", 1, ("node-1", "node-2"), np.array([0, 5, P - 1]))
    back = ss.SummedShare.from_bytes(share.to_bytes())
    assert (back.federation_id, back.round, back.node_id, back.x, back.senders) == (
        "fed",
        3,
        "node-1",
        1,
        ("node-1", "node-2"),
    )
    assert back.values.tolist() == [0, 5, P - 1]
    wire = share.to_bytes()
    with pytest.raises(ProtocolError, match="outside GF"):
        ss.SummedShare.from_bytes(wire[:-4] + b"\xff\xff\xff\x7f")
    with pytest.raises(ProtocolError, match="whole number of uint32"):
        ss.SummedShare.from_bytes(wire[:-1])
    with pytest.raises(ProtocolError, match="declares 3 values but carries 2"):
        ss.SummedShare.from_bytes(wire[:-4])
    with pytest.raises(ProtocolError, match="malformed summed share"):
        ss.SummedShare.from_bytes(b"\x00\x00")


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
