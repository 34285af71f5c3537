"""`LETHE_LOG_FORMAT=json`: one JSON object per line, each naming its round and forget
requests, from the API's access log and a node's stage handler; text stays the default."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.test import Client

from coordinator.server import access_log
from infra import logs
from infra.logs import JsonFormatter, bind_round, json_logs, log_context
from node.client_app import MAX_LOGGED_IDS, _ids


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("lethe.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def parsed(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_names_its_round_and_requests(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    logger.info("idle")
    with log_context(request_ids=["req-1", "req-2"]):
        logger.info("round starts")
        bind_round(7)
        logger.info("round %d: training", 7)
    logger.info("idle again")
    first, before, during, after = parsed(out)
    assert first["round"] is None and first["request_ids"] == []
    assert before["round"] is None and before["request_ids"] == ["req-1", "req-2"]
    assert during["round"] == 7 and during["msg"] == "round 7: training"
    assert during["role"] == "test" and during["level"] == "INFO"
    assert after["round"] is None and after["request_ids"] == []


def test_the_access_log_names_the_forget_request_of_the_path(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    app = Flask("t")
    app.get("/forget/<request_id>")(lambda request_id: ("{}", 200))
    client = Client(access_log(app, logger))
    client.get("/forget/req-9")
    client.get("/forget/" + "x" * 65)  # not an id: named nowhere
    client.get("/forget/a%0Ab")  # a forged line break stays escaped in the message
    named, too_long, forged = parsed(out)
    assert named["request_ids"] == ["req-9"] and '"GET /forget/req-9" 200' in str(named["msg"])
    assert too_long["request_ids"] == [] and forged["request_ids"] == []
    assert "\n" not in str(forged["msg"])


def test_text_is_the_default_and_a_bad_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.LOG_FORMAT_ENV, raising=False)
    assert not json_logs()
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "JSON")
    assert json_logs()
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "yaml")
    with pytest.raises(ValueError, match="LETHE_LOG_FORMAT='yaml': use one of text, json"):
        json_logs()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"round": 3, "forget_requests": [{"request_id": "r1"}]}, (3, ["r1"])),
        ({"round": "3", "forget_requests": "r1"}, (None, [])),
        ({"round": True, "forget_requests": [{"request_id": "a\nb"}, 5, {"x": 1}]}, (None, [])),
        ([1, 2], (None, [])),
    ],
)
def test_a_nodes_log_ids_come_only_from_well_formed_values(
    header: object, expected: tuple[object, list[str]]
) -> None:
    got = _ids({"header": json.dumps(header)})
    assert (got["round_no"], got["request_ids"]) == expected


def test_a_flood_of_request_ids_is_cut() -> None:
    header = {"forget_requests": [{"request_id": f"r{i}"} for i in range(10_000)]}
    assert len(_ids({"header": json.dumps(header)})["request_ids"]) == MAX_LOGGED_IDS
    assert _ids({"header": "not json"}) == {"round_no": None, "request_ids": []}
