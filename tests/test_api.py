"""The coordinator API over real HTTP: every bad input gets a 4xx JSON error, requests persist."""

from pathlib import Path
from typing import Any

import pytest
import requests

from coordinator.api import MAX_BODY_BYTES
from coordinator.queue import CoordinatorDB
from tests.api_server import TOKEN, commitment

pytest_plugins = ["tests.api_fixtures"]


def _post(api: str, body: Any, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{api}/forget", json=body, headers=headers, timeout=5)


def test_forget_request_is_queued_and_readable(api: str) -> None:
    res = _post(api, {"record_id": "rec-1"})
    assert res.status_code == 202
    req = res.json()
    assert req["state"] == "received" and req["record_id"] == "rec-1"
    got = requests.get(f"{api}/forget/{req['request_id']}", timeout=5).json()
    assert got["request_id"] == req["request_id"] and got["state"] == "received"


def test_only_token_holders_see_which_records_are_being_forgotten(api: str) -> None:
    # Attack: an outsider lists the queue to learn whose data is being forgotten.
    request_id = _post(api, {"record_id": "rec-1"}).json()["request_id"]
    for path in ("/forget", f"/forget/{request_id}"):
        public = requests.get(f"{api}{path}", timeout=5)
        assert public.status_code == 200 and "rec-1" not in public.text, path
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert "rec-1" in requests.get(f"{api}{path}", headers=auth, timeout=5).text, path


def test_repeated_request_id_is_idempotent(api: str, db: CoordinatorDB) -> None:
    first = _post(api, {"record_id": "rec-1", "request_id": "abc-1"})
    again = _post(api, {"record_id": "rec-1", "request_id": "abc-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert len(db.list_forgets()) == 1
    clash = _post(api, {"record_id": "rec-2", "request_id": "abc-1"})
    assert clash.status_code == 409 and "already used" in clash.json()["error"]


@pytest.mark.parametrize(
    ("body", "token", "status", "words"),
    [
        ({"record_id": "rec-1"}, None, 401, "bearer token"),
        ({"record_id": "rec-1"}, "wrong-token-0123456789", 401, "bearer token"),
        ({}, TOKEN, 400, "record_id is required"),
        ({"record_id": ""}, TOKEN, 400, "record_id is required"),
        ({"record_id": 7}, TOKEN, 400, "record_id is required"),
        ({"record_id": "rec-1", "extra": 1}, TOKEN, 400, "unknown field"),
        ({"record_id": "rec-1", "request_id": "bad id!"}, TOKEN, 400, "request_id"),
        (["rec-1"], TOKEN, 400, "JSON object"),
        ({"record_id": "nobody-has-this"}, TOKEN, 404, "unknown record id"),
    ],
)
def test_bad_input_gets_a_4xx_json_error(
    api: str, body: object, token: str | None, status: int, words: str
) -> None:
    res = _post(api, body, token)
    assert res.status_code == status
    assert words in res.json()["error"]


def test_malformed_json_oversized_body_and_unknown_ids(api: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    bad = requests.post(f"{api}/forget", data=b"{not json", headers=headers, timeout=5)
    assert bad.status_code == 400 and "JSON object" in bad.json()["error"]
    plain = requests.post(
        f"{api}/forget",
        data=b"record_id=x",
        timeout=5,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert plain.status_code == 415
    huge = requests.post(
        f"{api}/forget", data=b"{" + b" " * MAX_BODY_BYTES + b"}", headers=headers, timeout=5
    )
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]
    assert requests.get(f"{api}/forget/nope", timeout=5).status_code == 404
    assert requests.get(f"{api}/rounds/99", timeout=5).status_code == 404
    assert requests.get(f"{api}/no-such-thing", timeout=5).json()["status"] == 404


def test_requests_survive_a_restart(tmp_path: Path, db: CoordinatorDB, api: str) -> None:
    req = _post(api, {"record_id": "rec-2"}).json()
    reopened = CoordinatorDB(db.path)
    assert reopened.get_forget(req["request_id"]).state == "received"


def test_state_moves_only_forward_once(db: CoordinatorDB) -> None:
    req, _ = db.submit_forget("rec-1", commitment("rec-1"))
    assert db.advance_forget(req.request_id, "received", "dispatched", request_tx="0xaa")
    assert not db.advance_forget(req.request_id, "received", "dispatched")
    stored = db.get_forget(req.request_id)
    assert stored.state == "dispatched" and stored.request_tx == "0xaa"
    assert [h["state"] for h in stored.history] == ["received", "dispatched"]


def test_openapi_document_lists_every_endpoint(api: str) -> None:
    doc = requests.get(f"{api}/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.")
    assert {
        "/forget",
        "/forget/{request_id}",
        "/rounds",
        "/rounds/{round}",
        "/nodes",
        "/health",
    } <= set(doc["paths"])
    assert requests.get(f"{api}/health", timeout=5).json()["status"] == "ok"


def test_a_second_request_for_a_record_being_forgotten_returns_the_first(api: str) -> None:
    first = _post(api, {"record_id": "rec-2"})
    second = _post(api, {"record_id": "rec-2"})
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["request_id"] == first.json()["request_id"]
