"""The coordinator's HTTP API (Flask): forget requests in, state and history out.

The API only writes to the durable queue; the ServerApp loop does the work. So a request
accepted here (202) survives any restart, and a repeated POST with the same request id
returns the same request instead of forgetting twice.
"""

import hmac
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from coordinator.openapi import openapi_document
from coordinator.queue import CoordinatorDB, QueueError
from protocol.commitments import record_commitment

MAX_BODY_BYTES = 4096
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MAX_RECORD_ID = 256


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message, "status": status}), status


def create_app(
    db: CoordinatorDB,
    *,
    token: str,
    federation_id: str,
    explorer: Callable[[], str] | None = None,
) -> Flask:
    """Build the API over ``db``; ``token`` is the bearer token that may submit requests."""
    if len(token) < 16:
        raise ValueError("the API token must be at least 16 characters")
    app = Flask("lethe.coordinator")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        messages = {
            404: "no such endpoint",
            405: f"method {request.method} is not allowed here",
            413: f"request body larger than {MAX_BODY_BYTES} bytes",
        }
        return _error(status, messages.get(status, exc.description or exc.name))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        app.logger.exception("unexpected error")
        return _error(500, f"internal error: {type(exc).__name__}")

    def _authorised() -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip(), token)

    @app.post("/forget")
    def post_forget() -> tuple[Response, int]:
        if not _authorised():
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        if not request.is_json:
            return _error(415, "send a JSON body with Content-Type: application/json")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, 'body must be a JSON object like {"record_id": "..."}')
        unknown = set(body) - {"record_id", "request_id"}
        if unknown:
            return _error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        record_id = body.get("record_id")
        if not isinstance(record_id, str) or not record_id.strip():
            return _error(400, "record_id is required and must be a non-empty string")
        if len(record_id) > _MAX_RECORD_ID:
            return _error(400, f"record_id longer than {_MAX_RECORD_ID} characters")
        request_id = body.get("request_id")
        if request_id is not None and (
            not isinstance(request_id, str) or not _REQUEST_ID.match(request_id)
        ):
            return _error(400, "request_id must be 1-64 characters of [A-Za-z0-9._-]")
        commitment = "0x" + record_commitment(federation_id, record_id).hex()
        if db.record_owner(commitment) is None:
            if db.record_count() == 0:
                return _error(503, "no node has announced its records yet; retry after round 1")
            return _error(404, f"unknown record id {record_id!r}: no node holds it")
        try:
            req, created = db.submit_forget(record_id, commitment, request_id)
        except QueueError as exc:
            return _error(409, str(exc))
        return jsonify(req.to_json()), 202 if created else 200

    @app.get("/forget/<request_id>")
    def get_forget(request_id: str) -> tuple[Response, int]:
        try:
            return jsonify(db.get_forget(request_id).to_json()), 200
        except KeyError:
            return _error(404, f"unknown request id {request_id!r}")

    @app.get("/forget")
    def list_forget() -> tuple[Response, int]:
        return jsonify([r.to_json() for r in db.list_forgets()]), 200

    @app.get("/rounds")
    def list_rounds() -> tuple[Response, int]:
        return jsonify(db.list_rounds()), 200

    @app.get("/rounds/<int:round_no>")
    def get_round(round_no: int) -> tuple[Response, int]:
        try:
            return jsonify(db.get_round(round_no)), 200
        except KeyError:
            return _error(404, f"unknown round {round_no}")

    @app.get("/nodes")
    def list_nodes() -> tuple[Response, int]:
        return jsonify(db.list_nodes()), 200

    @app.get("/health")
    def health() -> tuple[Response, int]:
        info: dict[str, Any] = {
            "status": "ok",
            "federation_id": federation_id,
            "rounds": db.last_round(),
            "open_requests": len(db.list_forgets(("received", "dispatched", "certified"))),
        }
        return jsonify(info), 200

    @app.get("/openapi.json")
    def openapi() -> tuple[Response, int]:
        return jsonify(openapi_document()), 200

    if explorer is not None:
        render = explorer

        @app.get("/explorer")
        def explorer_page() -> Response:
            return Response(render(), mimetype="text/html")

    return app
