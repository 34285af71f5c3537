"""`POST /feedback`, its live log and the dashboard, over waitress on 127.0.0.1.

Specifications:
- the federation's latest *finalized* global model decides, read from the content store and
  checked against the round's model hash; with none yet, 503; a model that does not hash
  to its round's hash, or an unfinalized proposal, is never used;
- under the policy (default negative or neutral → forget) a forget request is opened for
  the record; a kept text opens none; a record no node holds gets 404;
- a row the model is unsure of (neither P(forget labels) nor its complement ≥ τ) is sent
  to review and opens nothing; a person decides it once, by name, through the same
  forget path; nobody can overrule a row the model decided, decide twice, or decide
  without the token or a name;
- without the token nothing is scored, opened or logged, and the live log is not readable;
- the live log streams each decision and its request's states, with a verify badge that is
  true only for a certificate signed by the node that certified it;
- the dashboard page loads nothing from another origin.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from flask import Flask

from coordinator.api import create_app
from coordinator.feedback import (
    FeedbackError,
    FeedbackLog,
    FeedbackPolicy,
    FeedbackService,
    GlobalModelScorer,
    Sentiment,
)
from coordinator.queue import CoordinatorDB
from protocol.features import EMBEDDING_DIM
from protocol.hashing import keccak256
from protocol.model import model_bytes
from protocol.store import LocalStore
from tests.api_server import RECORD_KEY, TOKEN
from tests.node_fixtures import build_node, make_records, small_config

pytest_plugins = ["tests.api_fixtures"]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE_KEY = "0x" + "45" * 32
OTHER_KEY = "0x" + "46" * 32


class KeywordScorer:
    """A stand-in for the global model in these API tests: the label is the keyword present
    (confident), or ``unsure`` (P(negative ∪ neutral) = 0.6: review at the default τ)."""

    def score(self, text: str) -> Sentiment:
        if "unsure" in text:
            unsure = {"negative": 0.4, "neutral": 0.2, "positive": 0.4}
            return Sentiment("negative", unsure, model_round=3, model_cid="bafkfake")
        label = next((w for w in ("negative", "neutral") if w in text), "positive")
        probabilities = {
            k: (0.8 if k == label else 0.1) for k in ("negative", "neutral", "positive")
        }
        return Sentiment(label, probabilities, model_round=3, model_cid="bafkfake")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "blocks")


def feedback_app(
    db: CoordinatorDB,
    store: LocalStore,
    *,
    scorer: Any = None,
    policy: FeedbackPolicy | None = None,
) -> Flask:
    service = FeedbackService(
        scorer=scorer or KeywordScorer(),
        policy=policy or FeedbackPolicy(),
        log=FeedbackLog(db, store, poll_s=0.05, stream_seconds=1.5),
    )
    return create_app(db, token=TOKEN, record_key=RECORD_KEY, feedback=service)


def events(
    api: str, since: int | None = None, headers: dict[str, str] = AUTH
) -> list[tuple[str, Any]]:
    """Every event of one live-log connection (it ends by itself after stream_seconds)."""
    query = "" if since is None else f"?since={since}"
    res = requests.get(f"{api}/feedback/events{query}", headers=headers, timeout=10)
    assert res.status_code == 200, res.text
    assert res.headers["Content-Type"].startswith("text/event-stream")
    found = []
    for block in res.text.split("\n\n"):
        name = re.search(r"^event: (.+)$", block, re.M)
        data = re.search(r"^data: (.+)$", block, re.M)
        if name and data:
            found.append((name[1], json.loads(data[1])))
    return found


def test_negative_feedback_opens_a_forget_request_positive_is_kept(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store))
    res = requests.post(
        f"{api}/feedback",
        json={"record_id": "rec-1", "text": "negative: rude staff"},
        headers=AUTH,
        timeout=10,
    )
    assert res.status_code == 202, res.text
    body = res.json()
    assert body["sentiment"]["label"] == "negative" and body["decision"] == "forget"
    assert body["model"] == {"round": 3, "cid": "bafkfake"}
    assert db.get_forget(body["forget"]["request_id"]).record_id == "rec-1"

    res = requests.post(
        f"{api}/feedback",
        json={"record_id": "rec-2", "text": "lovely branch"},
        headers=AUTH,
        timeout=10,
    )
    assert res.status_code == 200 and res.json()["decision"] == "keep"
    assert res.json()["forget"] is None
    assert [r.record_id for r in db.list_forgets()] == ["rec-1"]


def test_the_policy_decides_which_labels_forget(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store, policy=FeedbackPolicy(("negative",))))
    res = requests.post(
        f"{api}/feedback",
        json={"record_id": "rec-1", "text": "neutral: moved house"},
        headers=AUTH,
        timeout=10,
    )
    assert res.status_code == 200 and res.json()["decision"] == "keep"
    assert db.list_forgets() == []


def post(api: str, path: str, body: dict[str, Any], headers: dict[str, str] = AUTH) -> Any:
    return requests.post(f"{api}{path}", json=body, headers=headers, timeout=10)


def test_an_unsure_row_goes_to_review_and_a_person_decides_it_once(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store))
    res = post(api, "/feedback", {"record_id": "rec-1", "text": "unsure: it was fine I guess"})
    assert res.status_code == 200, res.text
    review = res.json()
    assert review["decision"] == "review" and review["forget"] is None
    assert review["decided_by"] == "model" and review["model"] == {"round": 3, "cid": "bafkfake"}
    assert db.list_forgets() == []
    seq = review["seq"]

    # Not without the token, not without a name, not in the model's name, nothing else.
    decide = f"/feedback/{seq}/decision"
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    assert post(api, decide, {"decision": "forget", "decided_by": "Ana"}, wrong).status_code == 401
    for bad in (
        {"decision": "forget"},
        {"decision": "forget", "decided_by": "  "},
        {"decision": "forget", "decided_by": "model"},
        {"decision": "maybe", "decided_by": "Ana"},
        {"decision": "forget", "decided_by": "Ana", "label": "positive"},
        {"decision": "forget", "decided_by": "x" * 101},
    ):
        assert post(api, decide, bad).status_code == 400, bad
    assert (
        post(api, "/feedback/999/decision", {"decision": "keep", "decided_by": "Ana"}).status_code
        == 404
    )
    assert db.list_forgets() == []

    res = post(api, decide, {"decision": "forget", "decided_by": "Ana Lima"})
    assert res.status_code == 202, res.text
    human = res.json()
    assert human["decision"] == "forget" and human["decided_by"] == "Ana Lima"
    assert human["resolves"] == seq and human["record_id"] == "rec-1"
    assert human["sentiment"] == review["sentiment"] and human["model"] == review["model"]
    assert db.get_forget(human["forget"]["request_id"]).record_id == "rec-1"

    # Decided once: a second click, or a decision on a row the model decided, is refused.
    again = post(api, decide, {"decision": "keep", "decided_by": "Bo"})
    assert again.status_code == 409 and "Ana Lima" in again.json()["error"]
    confident = post(api, "/feedback", {"record_id": "rec-2", "text": "lovely branch"}).json()
    overrule = post(
        api, f"/feedback/{confident['seq']}/decision", {"decision": "forget", "decided_by": "Bo"}
    )
    assert overrule.status_code == 409
    assert (
        post(
            api, f"/feedback/{human['seq']}/decision", {"decision": "keep", "decided_by": "Bo"}
        ).status_code
        == 409
    )
    assert [r.record_id for r in db.list_forgets()] == ["rec-1"]

    summary = requests.get(f"{api}/feedback/summary", headers=AUTH, timeout=10).json()
    assert summary["model"] == {"forget": 0, "keep": 1, "review": 1}
    assert summary["reviewed"] == {"forget": 1, "keep": 0}
    assert summary["shares"] == {"forget": 0.0, "keep": 0.5, "review": 0.5}
    assert requests.get(f"{api}/feedback/summary", headers=wrong, timeout=10).status_code == 401
    logged = [(e["decision"], e["decided_by"]) for n, e in events(api, since=0) if n == "feedback"]
    assert logged == [("review", "model"), ("forget", "Ana Lima"), ("keep", "model")]


def test_a_person_may_keep_a_review_row(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store))
    seq = post(api, "/feedback", {"record_id": "rec-1", "text": "unsure"}).json()["seq"]
    res = post(api, f"/feedback/{seq}/decision", {"decision": "keep", "decided_by": "Ana"})
    assert res.status_code == 200 and res.json()["forget"] is None
    assert db.list_forgets() == []


def test_tau_half_never_asks_a_person(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store, policy=FeedbackPolicy(tau=0.5)))
    res = post(api, "/feedback", {"record_id": "rec-1", "text": "unsure"})
    assert res.status_code == 202 and res.json()["decision"] == "forget"


def test_the_band_decides_by_the_forget_labels_probability() -> None:
    def decide(tau: float, neg: float, neu: float) -> str:
        probs = {"negative": neg, "neutral": neu, "positive": 1 - neg - neu}
        return FeedbackPolicy(tau=tau).decide(Sentiment("negative", probs, 1, "cid"))

    # The argmax label alone would forget here (negative 0.45); the band does not.
    assert decide(0.8, 0.45, 0.10) == "review"
    assert decide(0.8, 0.45, 0.35) == "forget"
    assert decide(0.8, 0.10, 0.05) == "keep"
    assert decide(0.5, 0.30, 0.20) == "forget"
    assert decide(1.0, 0.60, 0.30) == "review"
    for tau in (0.49, 1.01, float("nan")):
        with pytest.raises(ValueError, match="tau"):
            FeedbackPolicy(tau=tau)


def test_a_log_from_before_review_rows_is_migrated_without_loss(
    db: CoordinatorDB, store: LocalStore
) -> None:
    import sqlite3

    con = sqlite3.connect(db.path, isolation_level=None)
    con.execute(
        "CREATE TABLE feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL,"
        " label TEXT NOT NULL, probabilities TEXT NOT NULL, decision TEXT NOT NULL CHECK"
        " (decision IN ('forget', 'keep')), request_id TEXT, model_round INTEGER NOT NULL,"
        " model_cid TEXT NOT NULL, created_at REAL NOT NULL)"
    )
    con.execute(
        "INSERT INTO feedback (record_id, label, probabilities, decision, request_id,"
        " model_round, model_cid, created_at) VALUES ('old', 'negative', '{}', 'forget',"
        " 'req-1', 2, 'bafold', 1.0)"
    )
    con.close()
    log = FeedbackLog(db, store)
    old = log.since(0)
    assert [(e.seq, e.record_id, e.decision, e.decided_by) for e in old] == [
        (1, "old", "forget", "model")
    ]
    added = log.add("new", Sentiment("neutral", {}, 3, "bafnew"), "review", None)
    assert added.seq == 2 and log.summary()["model"] == {"forget": 1, "keep": 0, "review": 1}
    FeedbackLog(db, store)  # reopening a migrated log changes nothing
    assert [e.record_id for e in log.since(0)] == ["old", "new"]


def test_a_record_no_node_holds_gets_404(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store))
    res = requests.post(
        f"{api}/feedback",
        json={"record_id": "nobody", "text": "negative"},
        headers=AUTH,
        timeout=10,
    )
    assert res.status_code == 404 and "no node holds it" in res.json()["error"]
    assert db.list_forgets() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"record_id": "rec-1"}, 400),
        ({"record_id": "rec-1", "text": "  "}, 400),
        ({"record_id": "rec-1", "text": "x", "extra": 1}, 400),
        ({"record_id": "rec\n1", "text": "negative"}, 400),
        ({"record_id": "rec-1", "text": "negative " * 3000}, 413),
    ],
)
def test_bad_bodies_get_4xx(
    db: CoordinatorDB,
    store: LocalStore,
    serve_app: Callable[[Flask], str],
    body: dict[str, Any],
    status: int,
) -> None:
    api = serve_app(feedback_app(db, store))
    res = requests.post(f"{api}/feedback", json=body, headers=AUTH, timeout=10)
    assert res.status_code == status, res.text
    assert db.list_forgets() == []


def test_an_outsider_can_neither_submit_feedback_nor_read_the_log(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store))
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        res = requests.post(
            f"{api}/feedback",
            json={"record_id": "rec-1", "text": "negative"},
            headers=headers,
            timeout=10,
        )
        assert res.status_code == 401
        assert (
            requests.get(f"{api}/feedback/events", headers=headers, timeout=10).status_code == 401
        )
        assert (
            requests.get(f"{api}/feedback/events?since=0&token={TOKEN}", timeout=10).status_code
            == 401
        )
    assert db.list_forgets() == []
    assert FeedbackLog(db, store).last_seq() == 0


def test_the_live_log_streams_decisions_states_and_verified_certificates(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str], tmp_path: Path
) -> None:
    api = serve_app(feedback_app(db, store))
    opened = []
    for record_id in ("rec-1", "rec-2"):
        res = requests.post(
            f"{api}/feedback",
            json={"record_id": record_id, "text": "negative, sadly"},
            headers=AUTH,
            timeout=10,
        )
        opened.append(res.json()["forget"]["request_id"])
    log = events(api, since=0)
    assert log[0] == ("hello", {"last_seq": 2})
    assert [(e["record_id"], e["decision"]) for name, e in log if name == "feedback"] == [
        ("rec-1", "forget"),
        ("rec-2", "forget"),
    ]
    assert {e["request_id"]: e["state"] for name, e in log if name == "forget"} == {
        opened[0]: "received",
        opened[1]: "received",
    }

    # The node certifies both; rec-2's certificate is signed by another key than the
    # certifying node's (a forged or swapped certificate): its badge must say so.
    node = build_node(tmp_path / "node.sqlite", make_records(12), small_config())
    result = node.forget(["rec-0001", "rec-0002"], request_ids=opened)
    honest = result.certificate(opened[0]).signed(NODE_KEY)
    forged = result.certificate(opened[1]).signed(OTHER_KEY)
    node.close()
    for request_id, cert in zip(opened, (honest, forged), strict=True):
        cid = store.put(cert.to_bytes())
        db.advance_forget(request_id, "received", "dispatched")
        db.advance_forget(
            request_id,
            "dispatched",
            "certified",
            node_address=honest.node_address,
            certificate_cid=cid,
        )
    db.advance_forget(opened[0], "certified", "completed", round=4)
    forgets = {e["request_id"]: e for name, e in events(api, since=0) if name == "forget"}
    assert forgets[opened[0]]["state"] == "completed"
    assert forgets[opened[0]]["certificate_verified"] is True
    assert forgets[opened[1]]["certificate_verified"] is False
    assert "expected" in forgets[opened[1]]["certificate_detail"]
    # Without `since`, only what comes after the connection opened.
    assert [name for name, _ in events(api)] == ["hello", "end"]


def test_the_dashboard_loads_nothing_from_another_origin(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store))
    page = requests.get(f"{api}/dashboard", timeout=10)
    script = requests.get(f"{api}/dashboard.js", timeout=10)
    assert page.status_code == script.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    for text in (page.text, script.text):
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text)
        assert "http://" not in text and "https://" not in text
    assert ".innerHTML" not in script.text  # CSV text reaches the page as text only
    served = requests.get(f"{api}/openapi.json", timeout=10).json()
    assert {
        "/feedback",
        "/feedback/{seq}/decision",
        "/feedback/summary",
        "/feedback/events",
        "/dashboard",
        "/dashboard.js",
    } <= set(served["paths"])


# -- the scorer: the federation's own published model ------------------------------------


def publish(
    db: CoordinatorDB,
    store: LocalStore,
    round_no: int,
    vector: np.ndarray,
    *,
    state: str = "finalized",
    claimed_hash: str | None = None,
) -> str:
    data = model_bytes(vector)
    cid = store.put(data)
    db.save_round(
        round_no,
        state,
        {
            "global_model_cid": cid,
            "global_model_hash": claimed_hash or "0x" + keccak256(data).hex(),
        },
    )
    return cid


def head(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((EMBEDDING_DIM + 1) * 3).astype(np.float32)


def test_the_latest_finalized_global_model_decides(tmp_path: Path, store: LocalStore) -> None:
    from protocol.features import encode

    db = CoordinatorDB(tmp_path / "c.sqlite")
    scorer = GlobalModelScorer(db, store)
    with pytest.raises(FeedbackError, match="no round has been finalized"):
        scorer.score("anything")
    rng = np.random.default_rng(7)
    first, second, proposal = head(rng), head(rng), head(rng)
    publish(db, store, 1, first)
    cid = publish(db, store, 2, second)
    publish(db, store, 3, proposal, state="proposed")  # not finalized: never used
    text = "The branch staff were rude and I waited an hour"
    got = scorer.score(text)
    x = encode([text], progress=False)[0].astype(np.float64)
    logits = x @ second[: EMBEDDING_DIM * 3].reshape(EMBEDDING_DIM, 3) + second[EMBEDDING_DIM * 3 :]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert (got.model_round, got.model_cid) == (2, cid)
    assert got.label == ("negative", "neutral", "positive")[int(np.argmax(expected))]
    np.testing.assert_allclose(list(got.probabilities.values()), expected, atol=1e-5)


def test_a_model_that_does_not_match_its_round_hash_is_refused(
    tmp_path: Path, store: LocalStore
) -> None:
    db = CoordinatorDB(tmp_path / "c.sqlite")
    rng = np.random.default_rng(8)
    publish(db, store, 1, head(rng), claimed_hash="0x" + "00" * 32)
    with pytest.raises(FeedbackError, match="does not hash to its model hash"):
        GlobalModelScorer(db, store, embed=lambda _t: np.zeros(EMBEDDING_DIM, np.float32)).score(
            "x"
        )


def test_a_model_over_another_feature_space_is_refused(tmp_path: Path, store: LocalStore) -> None:
    db = CoordinatorDB(tmp_path / "c.sqlite")
    publish(db, store, 1, np.zeros((EMBEDDING_DIM + 64 + 1) * 3, np.float32))
    with pytest.raises(FeedbackError, match="feature map 'none'"):
        GlobalModelScorer(db, store, embed=lambda _t: np.zeros(EMBEDDING_DIM, np.float32)).score(
            "x"
        )


def test_the_api_answers_503_before_any_finalized_round(
    db: CoordinatorDB, store: LocalStore, serve_app: Callable[[Flask], str]
) -> None:
    api = serve_app(feedback_app(db, store, scorer=GlobalModelScorer(db, store)))
    res = requests.post(
        f"{api}/feedback", json={"record_id": "rec-1", "text": "awful"}, headers=AUTH, timeout=10
    )
    assert res.status_code == 503 and "no global model yet" in res.json()["error"]
