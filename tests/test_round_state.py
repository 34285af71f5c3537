"""A node's per-round memory, on disk: one sharing, one sender set and one sum per round.

Specifications:
- a retried share with the same parameters gets the same envelopes; other parameters in
  the same round are refused, also after the node restarts (a new RoundState on the file);
- one sender set per round: the same set again is answered as before, another refused;
- an unchanged model is never agreed into another sender set than last time, in any later
  round; once the model changed, any set is fine;
- one sum per round, over the set it was first asked;
- a sender lost mid-share: before summing, for a model first agreed in this round, a node
  may agree to a strict subset of its set (never back, never sideways, never after a sum);
- rounds are those of one contract: a re-deployed federation counts afresh.
"""

from pathlib import Path

import pytest

from node.round_state import RoundState, Sharing, set_key
from protocol.errors import ProtocolError

A, B, C, D = ("0x" + c * 40 for c in "abcd")
MODEL, NEW_MODEL = "0x" + "11" * 32, "0x" + "22" * 32
CONTRACT, REDEPLOYED = "0x" + "5f" * 20, "0x" + "e7" * 20


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "node.sqlite")


def test_a_retried_share_gets_the_same_masked_vector_and_another_is_refused(path: str) -> None:
    state = RoundState(path, CONTRACT)
    assert state.check_share(4, "fp") is None
    state.record_share(
        4, Sharing("fp", MODEL, 90, {A: b"ea", B: b"eb"}, (A, B), b"masked", "0xsig")
    )
    again = RoundState(path, CONTRACT)  # after a restart
    earlier = again.check_share(4, "fp")
    assert earlier is not None and earlier.envelopes == {A: b"ea", B: b"eb"}
    assert (earlier.masked_with, earlier.masked, earlier.masked_signature) == (
        (A, B),
        b"masked",
        "0xsig",
    )
    with pytest.raises(ProtocolError, match="already shared in round 4"):
        again.check_share(4, "other parameters")
    assert again.check_share(5, "other parameters") is None
    # The same round number of another contract is another round.
    assert RoundState(path, REDEPLOYED).check_share(4, "other parameters") is None


def test_one_sender_set_per_round(path: str) -> None:
    state = RoundState(path, CONTRACT)
    assert state.check_agree(4, [A, B, C], MODEL) is None
    state.record_agree(4, [A, B, C], MODEL, "sig")
    assert state.check_agree(4, [C.upper().replace("0X", "0x"), B, A], MODEL) == "sig"
    with pytest.raises(ProtocolError, match="another sender set in round 4"):
        state.check_agree(4, [A, B, D], MODEL)


def test_an_unchanged_model_is_never_summed_into_another_set(path: str) -> None:
    state = RoundState(path, CONTRACT)
    state.record_agree(4, [A, B, C, D], MODEL, "sig")
    # D went offline: the same model of this node, in a set without D, is refused.
    with pytest.raises(ProtocolError, match="unchanged since round 4"):
        RoundState(path, CONTRACT).check_agree(5, [A, B, C], MODEL)
    assert state.check_agree(5, [A, B, C, D], MODEL) is None
    # After a forget changed this node's model, the smaller set is fine.
    assert state.check_agree(5, [A, B, C], NEW_MODEL) is None


def test_one_sum_per_round(path: str) -> None:
    state = RoundState(path, CONTRACT)
    assert state.check_sum(4, [A, B, C]) is None
    state.record_sum(4, [A, B, C], "sig", b"sum")
    assert state.check_sum(4, [A, B, C]) == ("sig", b"sum")
    with pytest.raises(ProtocolError, match="already summed round 4"):
        state.check_sum(4, [A, B])


def test_a_sender_lost_mid_share_lets_the_others_agree_to_themselves_once(path: str) -> None:
    state = RoundState(path, CONTRACT)
    state.record_agree(4, [A, B, C, D], MODEL, "sig")
    # D's shares never arrived: the smaller set, same model, before any sum.
    assert state.check_agree(4, [A, B, C], MODEL) is None
    state.record_agree(4, [A, B, C], MODEL, "sig-abc")
    assert state.agreement(4) == (set_key([A, B, C]), "sig-abc")
    assert state.check_agree(4, [A, B, C], MODEL) == "sig-abc"
    with pytest.raises(ProtocolError, match="another sender set in round 4"):
        state.check_agree(4, [A, B, C, D], MODEL)  # never back to the larger set
    with pytest.raises(ProtocolError, match="another sender set in round 4"):
        state.check_agree(4, [A, B, D], MODEL)  # nor sideways
    # The model now stands with the smaller set in later rounds.
    with pytest.raises(ProtocolError, match="unchanged since round 4"):
        state.check_agree(5, [A, B, C, D], MODEL)


def test_no_smaller_set_after_summing_or_for_a_model_agreed_before(path: str) -> None:
    state = RoundState(path, CONTRACT)
    state.record_agree(4, [A, B, C, D], MODEL, "sig")
    state.record_sum(4, [A, B, C, D], "sig", b"sum")
    with pytest.raises(ProtocolError, match="another sender set in round 4"):
        state.check_agree(4, [A, B, C], MODEL)
    # Round 5, the same model again with the same set: it was agreed in round 4 already,
    # and round 4's sum over all four may be published, so no smaller set in round 5.
    state.record_agree(5, [A, B, C, D], MODEL, "sig5")
    with pytest.raises(ProtocolError, match="another sender set in round 5"):
        state.check_agree(5, [A, B, C], MODEL)
    # A model first agreed in round 5 may shrink in round 5.
    state.record_agree(6, [A, B, C, D], NEW_MODEL, "sig6")
    assert state.check_agree(6, [A, B, C], NEW_MODEL) is None
