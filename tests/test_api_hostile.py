"""Hostile requests, sent as raw bytes to the API as `lethe api` serves it: every one gets
a 4xx JSON error that names the problem, never a 500, a hang or a silently cut body."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from flask import Flask

from coordinator.api import MAX_BODY_BYTES, create_app
from coordinator.queue import CoordinatorDB
from coordinator.ratelimit import RateLimiter
from tests.api_server import RECORD_KEY, RECORDS, TOKEN, commitment

pytest_plugins = ["tests.api_fixtures"]

AUTH = f"Authorization: Bearer {TOKEN}".encode()
JSON = b"Content-Type: application/json"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def send(base: str, raw: bytes, timeout: float = 5.0) -> Answer:
    """Send ``raw`` (one whole HTTP/1.1 request) and read the answer until the server closes."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Answer(int(status_line.split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def request(
    method: str, path: str, *headers: bytes, body: bytes | None = None, chunked: bool = False
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += headers
    if body is not None and chunked:
        lines.append(b"Transfer-Encoding: chunked")
        pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif body is not None:
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    else:
        payload = b""
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def forget(body: bytes, *headers: bytes, chunked: bool = False) -> bytes:
    return request("POST", "/forget", AUTH, JSON, *headers, body=body, chunked=chunked)


def record(value: str, **extra: object) -> bytes:
    return json.dumps({"record_id": value, **extra}).encode()


DEEP = b"[" * 2000 + b"]" * 2000  # under 4 KiB, past the decoder's recursion limit
HOSTILE: list[tuple[str, bytes, int, str]] = [
    # path integers and ids
    ("round past int64", request("GET", "/rounds/9223372036854775808"), 400, "round must"),
    ("round of 30 digits", request("GET", "/rounds/" + "9" * 30), 400, "round must"),
    ("negative round", request("GET", "/rounds/-1"), 400, "round must"),
    ("round in exponent form", request("GET", "/rounds/1e3"), 400, "round must"),
    ("round in hex", request("GET", "/rounds/0x10"), 400, "round must"),
    ("round with NUL", request("GET", "/rounds/1%00"), 400, "round must"),
    ("round as emoji", request("GET", "/rounds/%F0%9F%92%A5"), 400, "round must"),
    ("round with a slash", request("GET", "/rounds/1/2"), 400, "round must"),
    ("request id with newline", request("GET", "/forget/abc%0A"), 400, "request_id"),
    ("request id with NUL", request("GET", "/forget/a%00b"), 400, "request_id"),
    ("request id too long", request("GET", "/forget/" + "a" * 65), 400, "request_id"),
    ("request id traversal", request("GET", "/forget/..%2F..%2Fetc%2Fpasswd"), 400, "request_id"),
    ("request id invalid UTF-8", request("GET", "/forget/%FF%FE"), 400, "request_id"),
    ("unknown request id", request("GET", "/forget/no-such-id"), 404, "unknown request id"),
    ("unknown route", request("GET", "/admin"), 404, "no such endpoint"),
    # credentials
    (
        "non-ASCII bearer token",
        forget(record("rec-1"), "Authorization: Bearer é€".encode()),
        401,
        "bearer token",
    ),
    (
        "raw high bytes in token",
        forget(record("rec-1"), b"Authorization: Bearer \xff\xfe"),
        401,
        "bearer token",
    ),
    ("scheme without token", forget(record("rec-1"), b"Authorization: Bearer"), 401, "bearer"),
    ("basic auth", forget(record("rec-1"), b"Authorization: Basic dXNlcjpwYXNz"), 401, "bearer"),
    (
        "8 KiB token",
        forget(record("rec-1"), b"Authorization: Bearer " + b"A" * 8192),
        401,
        "bearer",
    ),
    ("no token", request("POST", "/forget", JSON, body=record("rec-1")), 401, "bearer"),
    # bodies
    ("lone surrogate record id", forget(b'{"record_id": "\\ud800"}'), 400, "lone surrogate"),
    ("NUL in record id", forget(record("a\x00b")), 400, "control characters"),
    ("escape sequence in record id", forget(record("\x1b[2J")), 400, "control characters"),
    ("record id of 257 chars", forget(record("x" * 257)), 400, "longer than 256"),
    ("null record id", forget(b'{"record_id": null}'), 400, "record_id is required"),
    ("list record id", forget(b'{"record_id": ["rec-1"]}'), 400, "record_id is required"),
    ("request id with newline", forget(record("rec-1", request_id="abc\n")), 400, "request_id"),
    ("numeric request id", forget(record("rec-1", request_id=5)), 400, "request_id"),
    ("extra field", forget(record("rec-1", __proto__={})), 400, "unknown field"),
    (
        "duplicate keys, last bad",
        forget(b'{"record_id":"rec-1","record_id":"\\udfff"}'),
        400,
        "lone surrogate",
    ),
    ("2000-deep nesting", forget(DEEP), 400, "JSON object"),
    ("NaN", forget(b'{"record_id": NaN}'), 400, "record_id is required"),
    ("invalid UTF-8 body", forget(b'{"record_id": "\xff\xfe"}'), 400, "JSON object"),
    ("JSON string body", forget(b'"rec-1"'), 400, "JSON object"),
    ("empty body", forget(b""), 400, "JSON object"),
    ("chunked body over 4 KiB", forget(record("x" * 5000), chunked=True), 413, "larger than"),
    (
        "chunked record id over 4 KiB, valid JSON",
        forget(record("rec-1", request_id="a" * 5000), chunked=True),
        413,
        "larger than",
    ),
    ("declared body over 4 KiB", forget(b"{" + b" " * MAX_BODY_BYTES + b"}"), 413, "larger than"),
    (
        "text/plain body",
        request("POST", "/forget", AUTH, b"Content-Type: text/plain", body=record("rec-1")),
        415,
        "Content-Type",
    ),
    (
        "no content type",
        request("POST", "/forget", AUTH, body=record("rec-1")),
        415,
        "Content-Type",
    ),
    (
        "form body",
        request(
            "POST",
            "/forget",
            AUTH,
            b"Content-Type: application/x-www-form-urlencoded",
            body=b"record_id=rec-1",
        ),
        415,
        "Content-Type",
    ),
    # methods
    ("DELETE /forget", request("DELETE", "/forget"), 405, "not allowed"),
    ("PUT /rounds", request("PUT", "/rounds", JSON, body=b"{}"), 405, "not allowed"),
    ("PATCH /health", request("PATCH", "/health"), 405, "not allowed"),
    ("POST /rounds/1", request("POST", "/rounds/1", AUTH, JSON, body=b"{}"), 405, "not allowed"),
    ("DELETE /forget/x", request("DELETE", "/forget/abc"), 405, "not allowed"),
    ("TRACE /openapi.json", request("TRACE", "/openapi.json"), 405, "not allowed"),
]


@pytest.mark.parametrize(
    ("raw", "status", "words"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
def test_hostile_request_gets_a_4xx_json_error(
    api: str, raw: bytes, status: int, words: str
) -> None:
    answer = send(api, raw)
    assert answer.status == status, answer.body[:300]
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()
    assert error["status"] == status and words in str(error["error"])
    if status == 405:
        assert answer.headers["allow"], "405 must say which methods are allowed"


def test_hostile_list_is_long_enough() -> None:
    assert len(HOSTILE) >= 30


def test_nothing_hostile_reached_the_queue(api: str, db: CoordinatorDB) -> None:
    for _name, raw, _status, _words in HOSTILE:
        send(api, raw)
    assert db.list_forgets() == []


def test_retrying_a_finished_request_returns_it(api: str, db: CoordinatorDB) -> None:
    first = send(api, forget(record("rec-1", request_id="dsr-1")))
    assert first.status == 202
    for old, new in (
        ("received", "dispatched"),
        ("dispatched", "certified"),
        ("certified", "completed"),
    ):
        assert db.advance_forget("dsr-1", old, new)
    # the owning node forgot it: it no longer announces the record
    db.replace_record_index("0x" + "11" * 20, [commitment("rec-2")])
    again = send(api, forget(record("rec-1", request_id="dsr-1")))
    assert again.status == 200 and again.json()["state"] == "completed"
    without_id = send(api, forget(record("rec-1")))
    assert without_id.status == 200 and without_id.json()["request_id"] == "dsr-1"
    clash = send(api, forget(record("rec-2", request_id="dsr-1")))
    assert clash.status == 409


def test_a_4096_byte_chunked_body_is_read_whole(api: str) -> None:
    body = record("rec-1", request_id="chunky")
    body = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    assert len(body) == MAX_BODY_BYTES
    answer = send(api, forget(body, chunked=True))
    assert answer.status == 202 and answer.json()["request_id"] == "chunky"


def test_rate_limit_throttles_a_client_and_ignores_spoofed_headers(
    db: CoordinatorDB, serve_app: Callable[[Flask], str]
) -> None:
    app = create_app(db, token=TOKEN, record_key=RECORD_KEY, rate_limit=RateLimiter(0.5, 5))
    base = serve_app(app)
    statuses = []
    for i in range(8):  # a new spoofed client address each time: still one bucket
        spoof = f"X-Forwarded-For: 10.0.0.{i}".encode()
        statuses.append(send(base, request("GET", "/health", spoof, b"X-Real-IP: 1.2.3.4")).status)
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    throttled = send(base, request("GET", "/rounds"))
    assert throttled.status == 429 and int(throttled.headers["retry-after"]) >= 1
    assert "too many requests" in str(throttled.json()["error"])
    # the token holder is never throttled
    assert send(base, forget(record(RECORDS[0]))).status == 202


def test_rate_limiter_refills_and_forgets_old_clients() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 2, max_clients=3, clock=lambda: now[0])
    assert limiter.hit("a") is None and limiter.hit("a") is None
    wait = limiter.hit("a")
    assert wait is not None and 0 < wait <= 0.5
    now[0] += 0.5
    assert limiter.hit("a") is None
    for client in "bcde":
        limiter.hit(client)
    assert len(limiter._buckets) == 3
