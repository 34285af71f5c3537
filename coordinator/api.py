"""The coordinator's HTTP API (Flask): forget requests in, state and history out.

The API only writes to the durable queue; the ServerApp loop does the work. So a request
accepted here (202) survives any restart, and a repeated POST with the same request id
returns the same request instead of forgetting twice.

Every input is checked before it reaches the queue (path ids against their pattern,
integers against SQLite's range, strings for lone surrogates and control characters,
the body's size however it is sent), so any request gets a 2xx or a 4xx JSON answer;
a 500 is a bug. Public routes share a per-client rate limit keyed on the peer address
(never on a header a client can set).
"""

import hmac
import json
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from coordinator.feedback import FeedbackError, FeedbackService, Sentiment, valid_decider
from coordinator.health import public_view
from coordinator.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from coordinator.metrics import metrics_text
from coordinator.openapi import openapi_document
from coordinator.queue import CoordinatorDB, QueueError
from coordinator.ratelimit import RateLimiter
from protocol.commitments import RecordKey

MAX_BODY_BYTES = 4096
MAX_FEEDBACK_BYTES = 16384
"""A feedback body carries the text; the encoder reads its first 256 tokens only."""
MAX_ROUND = 2**63 - 1  # SQLite's INTEGER
REQUEST_ID_PATTERN = "^[A-Za-z0-9._-]{1,64}$"
MAX_RECORD_ID = 256
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PART_ID = re.compile(r"[A-Za-z0-9._-]{1,64}@0x[0-9a-f]{40}")
_ROUND = re.compile(r"[0-9]{1,19}")


class BadInput(ValueError):
    """A request field fails validation; the message names the field."""


class _AnyText(BaseConverter):
    """The rest of the path, newlines and slashes included, for the view to validate.

    So a malformed id gets the 400 that names its rules, not a 404 from routing.
    """

    regex = r"[\s\S]+"
    part_isolating = False


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message, "status": status}), status


def valid_request_id(value: object) -> str:
    """``value`` if it is a request id (1-64 of ``[A-Za-z0-9._-]``, nothing else)."""
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise BadInput("request_id must be 1-64 characters of [A-Za-z0-9._-]")
    return value


def valid_request_or_part_id(value: object) -> str:
    """``value`` if it is a request id, or one holder's part of one (``<id>@<address>``,
    ``coordinator.queue.part_id``) when several nodes hold the record."""
    if isinstance(value, str) and _PART_ID.fullmatch(value):
        return value
    return valid_request_id(value)


def valid_record_id(value: object) -> str:
    """``value`` if it is a record id: printable Unicode text of 1-256 characters."""
    if not isinstance(value, str) or not value:
        raise BadInput("record_id is required and must be a non-empty string")
    if len(value) > MAX_RECORD_ID:
        raise BadInput(f"record_id longer than {MAX_RECORD_ID} characters")
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise BadInput("record_id is not valid Unicode (lone surrogate)")
        if category == "Cc":
            raise BadInput("record_id must not contain control characters")
    return value


def valid_round(value: str) -> int:
    """A round number from a path segment: a decimal integer from 0 to 2^63 - 1."""
    if not _ROUND.fullmatch(value) or int(value) > MAX_ROUND:
        raise BadInput(f"round must be an integer from 0 to {MAX_ROUND}")
    return int(value)


def _read_body(limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused past ``limit`` bytes however it is framed.

    A declared Content-Length over the limit is refused before reading; a chunked body
    (no Content-Length) is read one byte past the limit, so it is refused, not cut.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(limit)
    return data


class BodyTooLarge(Exception):
    """The body is over its route's limit (``MAX_BODY_BYTES`` unless the route says)."""

    def __init__(self, limit: int = MAX_BODY_BYTES) -> None:
        super().__init__(limit)
        self.limit = limit


def _bearer_matches(header: str, token: str) -> bool:
    """Constant-time token check that accepts any header bytes (non-ASCII included)."""
    scheme, _, supplied = header.partition(" ")
    given = supplied.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, token.encode())


def create_app(
    db: CoordinatorDB,
    *,
    token: str,
    record_key: RecordKey,
    explorer: Callable[[], str] | None = None,
    rate_limit: RateLimiter | None = None,
    health: Callable[[], dict[str, Any]] | None = None,
    feedback: FeedbackService | None = None,
) -> Flask:
    """Build the API over ``db``.

    ``token`` is the bearer token that may submit requests (and read record ids and
    receipts); ``record_key`` keys the record commitments owners are looked up by;
    ``explorer`` renders the
    ``/explorer`` page; ``rate_limit`` throttles every request that does not carry the
    token, per client address (None: no limit); ``health`` probes the federation's parts
    for ``/health`` and ``/metrics`` (``coordinator.health.probe``; None: the API's own
    counters only);
    ``feedback`` adds ``POST /feedback``, its live log and the ``/dashboard`` page.
    """
    if len(token) < 16:
        raise ValueError("the API token must be at least 16 characters")
    app = Flask("lethe.coordinator")
    # Bodies are read by _read_body; Flask's own limit stays as a second guard.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["text"] = _AnyText

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        messages = {
            404: "no such endpoint",
            405: f"method {request.method} is not allowed here",
            413: f"request body larger than {MAX_BODY_BYTES} bytes",
        }
        response, status = _error(status, messages.get(status, exc.description or exc.name))
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                response.headers[name] = value
        return response, status

    @app.errorhandler(BadInput)
    def _bad_input(exc: BadInput) -> tuple[Response, int]:
        return _error(400, str(exc))

    @app.errorhandler(BodyTooLarge)
    def _too_large(exc: BodyTooLarge) -> tuple[Response, int]:
        return _error(413, f"request body larger than {exc.limit} bytes")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        app.logger.exception("unexpected error")
        return _error(500, f"internal error: {type(exc).__name__}")

    def _authorised() -> bool:
        return _bearer_matches(request.headers.get("Authorization", ""), token)

    if rate_limit is not None:
        limiter = rate_limit

        @app.before_request
        def _throttle() -> tuple[Response, int] | None:
            if _authorised():
                return None
            wait = limiter.hit(request.remote_addr or "-")
            if wait is None:
                return None
            seconds = max(1, math.ceil(wait))
            response, status = _error(429, f"too many requests: retry in {seconds} s")
            response.headers["Retry-After"] = str(seconds)
            return response, status

    @app.post("/forget")
    def post_forget() -> tuple[Response, int]:
        if not _authorised():
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        if not request.is_json:
            return _error(415, "send a JSON body with Content-Type: application/json")
        try:
            body = json.loads(_read_body())
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            return _error(400, 'body must be a JSON object like {"record_id": "..."}')
        unknown = set(body) - {"record_id", "request_id"}
        if unknown:
            return _error(400, "unknown field(s): " + ", ".join(map(repr, sorted(unknown)))[:200])
        record_id = valid_record_id(body.get("record_id"))
        request_id = body.get("request_id")
        if request_id is not None:
            request_id = valid_request_id(request_id)
            try:  # a retry: answered from the queue, even once the record is gone
                existing = db.get_forget(request_id)
            except KeyError:
                pass
            else:
                if existing.record_id != record_id:
                    return _error(
                        409, f"request id {request_id!r} was already used for another record"
                    )
                return jsonify(existing.to_json()), 200
        commitment = record_key.commitment_hex(record_id)
        if not db.record_owners(commitment):
            done = db.latest_forget_for(commitment)
            if done is not None and done.state == "completed":  # forgotten, not "unknown"
                return jsonify(done.to_json()), 200
            if db.record_count() == 0:
                return _error(503, "no node has announced its records yet; retry after round 1")
            return _error(404, f"unknown record id {record_id!r}: no node holds it")
        try:
            req, created = db.submit_forget(record_id, commitment, request_id)
        except QueueError as exc:
            return _error(409, str(exc))
        return jsonify(req.to_json()), 202 if created else 200

    @app.get("/forget/<text:request_id>/receipt")
    def get_receipt(request_id: str) -> tuple[Response, int]:
        if not _authorised():
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        valid_request_or_part_id(request_id)
        try:
            req = db.get_forget(request_id)
        except KeyError:
            return _error(404, f"unknown request id {request_id!r}")
        receipt = req.receipt
        if req.is_split:
            return _error(
                404,
                f"request {request_id!r} is held by several nodes: ask for the receipt of "
                "each part (its owners list their request ids)",
            )
        if receipt is None:
            return _error(404, f"request {request_id!r} has no receipt yet (not certified)")
        return jsonify(receipt), 200

    @app.get("/forget/<text:request_id>")
    def get_forget(request_id: str) -> tuple[Response, int]:
        valid_request_or_part_id(request_id)
        try:
            shown = db.get_forget(request_id).to_json(with_record_id=_authorised())
            return jsonify(shown), 200
        except KeyError:
            return _error(404, f"unknown request id {request_id!r}")

    @app.get("/forget")
    def list_forget() -> tuple[Response, int]:
        # Record ids only with the token: without it a list of candidate ids cannot be
        # matched against what was asked to be forgotten.
        shown = _authorised()
        return jsonify([r.to_json(with_record_id=shown) for r in db.list_forgets()]), 200

    @app.get("/rounds")
    def list_rounds() -> tuple[Response, int]:
        return jsonify(db.list_rounds()), 200

    @app.get("/rounds/<text:round_no>")
    def get_round(round_no: str) -> tuple[Response, int]:
        number = valid_round(round_no)
        try:
            return jsonify(db.get_round(number)), 200
        except KeyError:
            return _error(404, f"unknown round {number}")

    @app.get("/nodes")
    def list_nodes() -> tuple[Response, int]:
        return jsonify(db.list_nodes()), 200

    @app.get("/health")
    def health_report() -> tuple[Response, int]:
        info: dict[str, Any] = {
            "status": "ok",
            "federation_id": record_key.federation_id,
            "rounds": db.last_round(),
            "open_requests": len(db.list_forgets(("received", "dispatched", "certified"))),
        }
        if health is None:
            return jsonify(info), 200
        info.update(health())
        shown = info if _authorised() else public_view(info)
        return jsonify(shown), 200 if info["status"] == "ok" else 503

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(metrics_text(db, health), headers={"Content-Type": METRICS_CONTENT_TYPE})

    @app.get("/openapi.json")
    def openapi() -> tuple[Response, int]:
        document = openapi_document(explorer=explorer is not None, feedback=feedback is not None)
        return jsonify(document), 200

    if explorer is not None:
        render = explorer

        @app.get("/explorer")
        def explorer_page() -> Response:
            return Response(render(), mimetype="text/html")

    if feedback is not None:
        _feedback_routes(app, db, feedback, record_key, _authorised)
    return app


def _decide(
    db: CoordinatorDB,
    service: FeedbackService,
    record_key: RecordKey,
    record_id: str,
    sentiment: Sentiment,
    decision: str,
    request_id: str | None,
    *,
    decided_by: str = "model",
    resolves: int | None = None,
) -> tuple[Response, int]:
    """Log a decision; a forget opens (or finds) the record's forget request first, the
    same path whoever decided."""
    forget: dict[str, Any] | None = None
    status = 200
    if decision == "forget":
        commitment = record_key.commitment_hex(record_id)
        done = db.latest_forget_for(commitment)
        if db.record_owners(commitment):
            try:
                req, created = db.submit_forget(record_id, commitment, request_id)
            except QueueError as exc:
                return _error(409, str(exc))
            forget, status = req.to_json(), 202 if created else 200
        elif done is not None and done.state == "completed":
            forget = done.to_json()
        else:
            return _error(404, f"unknown record id {record_id!r}: no node holds it")
    try:
        entry = service.log.add(
            record_id,
            sentiment,
            decision,
            None if forget is None else forget["request_id"],
            decided_by=decided_by,
            resolves=resolves,
        )
    except FeedbackError as exc:
        return _error(409, str(exc))
    return jsonify({**entry.to_json(), "forget": forget}), status


def _feedback_routes(
    app: Flask,
    db: CoordinatorDB,
    service: FeedbackService,
    record_key: RecordKey,
    authorised: Callable[[], bool],
) -> None:
    """``POST /feedback``, the live log ``GET /feedback/events`` and the dashboard page."""
    from coordinator.dashboard import DASHBOARD_HTML, DASHBOARD_JS, SECURITY_HEADERS

    unauthorised = "missing or wrong bearer token (Authorization: Bearer <token>)"

    @app.post("/feedback")
    def post_feedback() -> tuple[Response, int]:
        if not authorised():
            return _error(401, unauthorised)
        if not request.is_json:
            return _error(415, "send a JSON body with Content-Type: application/json")
        request.max_content_length = MAX_FEEDBACK_BYTES
        try:
            body = json.loads(_read_body(MAX_FEEDBACK_BYTES))
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            return _error(400, 'body must be a JSON object like {"record_id": …, "text": …}')
        unknown = set(body) - {"record_id", "text", "request_id"}
        if unknown:
            return _error(400, "unknown field(s): " + ", ".join(map(repr, sorted(unknown)))[:200])
        record_id = valid_record_id(body.get("record_id"))
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadInput("text is required and must be a non-empty string")
        if any(unicodedata.category(c) == "Cs" for c in text):
            raise BadInput("text is not valid Unicode (lone surrogate)")
        request_id = body.get("request_id")
        if request_id is not None:
            request_id = valid_request_id(request_id)
        try:
            sentiment = service.scorer.score(text)
        except FeedbackError as exc:
            return _error(503, str(exc))
        decision = service.policy.decide(sentiment)
        return _decide(db, service, record_key, record_id, sentiment, decision, request_id)

    @app.post("/feedback/<int:seq>/decision")
    def decide_review(seq: int) -> tuple[Response, int]:
        if not authorised():
            return _error(401, unauthorised)
        body = request.get_json(silent=True) if request.is_json else None
        if not isinstance(body, dict):
            return _error(
                400, 'body must be a JSON object like {"decision": "forget", "decided_by": "…"}'
            )
        unknown = set(body) - {"decision", "decided_by", "request_id"}
        if unknown:
            return _error(400, "unknown field(s): " + ", ".join(map(repr, sorted(unknown)))[:200])
        decision = body.get("decision")
        if decision not in ("forget", "keep"):
            raise BadInput('decision must be "forget" or "keep"')
        try:
            decider = valid_decider(body.get("decided_by"))
        except FeedbackError as exc:
            raise BadInput(str(exc)) from exc
        request_id = body.get("request_id")
        if request_id is not None:
            request_id = valid_request_id(request_id)
        entry = service.log.get(seq)
        if entry is None:
            return _error(404, f"no feedback {seq}")
        if entry.decision != "review" or entry.resolves is not None:
            return _error(
                409, f"feedback {seq} was decided by {entry.decided_by}, not sent to review"
            )
        done = service.log.resolution(seq)
        if done is not None:
            return _error(409, f"feedback {seq} was already decided by {done.decided_by}")
        sentiment = Sentiment(entry.label, entry.probabilities, entry.model_round, entry.model_cid)
        return _decide(
            db,
            service,
            record_key,
            entry.record_id,
            sentiment,
            decision,
            request_id,
            decided_by=decider,
            resolves=seq,
        )

    @app.get("/feedback/summary")
    def feedback_summary() -> tuple[Response, int]:
        if not authorised():
            return _error(401, unauthorised)
        return jsonify(service.log.summary()), 200

    @app.get("/feedback/events")
    def feedback_events() -> Response | tuple[Response, int]:
        if not authorised():
            return _error(401, unauthorised)
        raw = request.args.get("since")
        if raw is None:
            since = service.log.last_seq()
        elif re.fullmatch(r"[0-9]{1,18}", raw):
            since = int(raw)
        else:
            raise BadInput("since must be a non-negative integer (a feedback sequence number)")
        return Response(
            service.log.stream(since),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/dashboard")
    def dashboard() -> Response:
        return Response(DASHBOARD_HTML, mimetype="text/html", headers=SECURITY_HEADERS)

    @app.get("/dashboard.js")
    def dashboard_js() -> Response:
        return Response(DASHBOARD_JS, mimetype="text/javascript", headers=SECURITY_HEADERS)
