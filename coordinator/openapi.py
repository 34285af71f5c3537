"""The OpenAPI 3.1 document of the coordinator API, served at ``/openapi.json``.

It is the contract the tests hold the API to (schemathesis runs every operation against
it): every route, every parameter's exact domain, and every status a route can answer.
"""

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_REQUEST = {"$ref": "#/components/schemas/ForgetRequest"}
_HEALTH = {"$ref": "#/components/schemas/Health"}
_RECEIPT = {"$ref": "#/components/schemas/Receipt"}
_HEX32 = {"type": "string", "pattern": "^0x[0-9a-f]{64}$"}
_PART = {
    "type": "object",
    "required": ["ok"],
    "properties": {"ok": {"type": "boolean"}, "error": {"type": "string"}},
}
# The record ids the API accepts (with 1-256 characters): no control characters. Lone
# surrogates are refused too, but JSON Schema regexes (Rust's, in validators) cannot say so.
RECORD_ID_PATTERN = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*extra: tuple[int, str]) -> dict[str, Any]:
    """Error answers every route can give, plus ``extra`` (status, description)."""
    answers = {
        "429": {
            **_json(_ERROR, "too many requests from this client; see Retry-After"),
            "headers": {"Retry-After": {"schema": {"type": "string"}}},
        }
    }
    for status, description in extra:
        answers[str(status)] = _json(_ERROR, description)
    return answers


def _read(summary: str, schema: dict[str, Any], *extra: tuple[int, str]) -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": _json(schema, "ok"), **_errors(*extra)}}


def openapi_document(*, explorer: bool = True, feedback: bool = False) -> dict[str, Any]:
    """Describe every endpoint, its inputs and its error answers."""
    paths: dict[str, Any] = {
        "/forget": {
            "post": {
                "summary": "Ask the federation to forget one record",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ForgetBody"}}
                    },
                },
                "responses": {
                    "202": _json(_REQUEST, "accepted and queued"),
                    "200": _json(
                        _REQUEST,
                        "already known: the request with this request_id, the open request "
                        "for this record, or the completed one that forgot it",
                    ),
                    **_errors(
                        (400, "bad JSON or fields"),
                        (401, "missing or wrong bearer token"),
                        (404, "no node holds this record"),
                        (409, "request id already used for another record"),
                        (413, "body larger than 4096 bytes"),
                        (415, "body is not JSON"),
                        (503, "no node has announced its records yet"),
                    ),
                },
            },
            "get": _read(
                "List every forget request (record ids only with the token)",
                {"type": "array", "items": _REQUEST},
            ),
        },
        "/forget/{request_id}": {
            "get": {
                **_read(
                    "State, transactions and certificate of one request",
                    _REQUEST,
                    (400, "not a request id"),
                    (404, "unknown request id"),
                ),
                "parameters": [
                    {
                        "name": "request_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                    }
                ],
            }
        },
        "/forget/{request_id}/receipt": {
            "get": {
                "summary": "The owner node's receipt: the salts the data subject needs to "
                "check the certificate (only with the token)",
                "security": [{"bearer": []}],
                "responses": {
                    "200": _json(_RECEIPT, "the receipt"),
                    **_errors(
                        (400, "not a request id"),
                        (401, "missing or wrong bearer token"),
                        (404, "unknown request id, or not certified yet"),
                    ),
                },
                "parameters": [
                    {
                        "name": "request_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                    }
                ],
            }
        },
        "/rounds": {"get": _read("Every round", {"type": "array", "items": {"type": "object"}})},
        "/rounds/{round}": {
            "get": {
                **_read(
                    "One round",
                    {"type": "object"},
                    (400, "not a round number"),
                    (404, "unknown round"),
                ),
                "parameters": [
                    {
                        "name": "round",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    }
                ],
            }
        },
        "/nodes": {"get": _read("Nodes seen", {"type": "array", "items": {"type": "object"}})},
        "/health": {
            "get": {
                "summary": "Whether the federation can make progress, part by part",
                "responses": {
                    "200": _json(_HEALTH, "every part is up"),
                    "503": _json(_HEALTH, "a part is down: `problems` names it"),
                    **_errors(),
                },
            }
        },
        "/openapi.json": {"get": _read("This document", {"type": "object"})},
        "/metrics": {
            "get": {
                "summary": "Rounds, stages, forgets, nodes, chain and store for Prometheus",
                "responses": {
                    "200": {
                        "description": "the Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(),
                },
            }
        },
    }
    if explorer:
        paths["/explorer"] = {
            "get": {
                "summary": "The audit explorer page (self-contained HTML)",
                "responses": {
                    "200": {"description": "ok", "content": {"text/html": {"schema": {}}}},
                    **_errors(),
                },
            }
        }
    if feedback:
        paths.update(_feedback_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lethe coordinator API",
            "version": "1",
            "description": (
                "Submit and follow forget requests; read rounds and nodes. Any route may "
                "answer 405 (with Allow) to another method, and 429 when a client without "
                "the token sends too many requests."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "status"],
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                },
                "ForgetBody": {
                    "type": "object",
                    "required": ["record_id"],
                    "additionalProperties": False,
                    "properties": {
                        "record_id": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 256,
                            "pattern": RECORD_ID_PATTERN,
                        },
                        "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                    },
                },
                "ForgetRequest": {
                    "type": "object",
                    "required": ["request_id", "state", "tx", "history"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "record_id": {
                            "type": "string",
                            "description": "Only with the bearer token: the public view does "
                            "not name the records being forgotten.",
                        },
                        "state": {
                            "enum": ["received", "dispatched", "certified", "completed", "failed"]
                        },
                        "reason": {"type": ["string", "null"]},
                        "node_address": {"type": ["string", "null"]},
                        "certificate_cid": {"type": ["string", "null"]},
                        "new_model_hash": {"type": ["string", "null"]},
                        "round": {"type": ["integer", "null"]},
                        "tx": {"type": "object"},
                        "created_at": {"type": "number"},
                        "updated_at": {"type": "number"},
                        "history": {"type": "array"},
                        "receipt": {
                            "oneOf": [_RECEIPT, {"type": "null"}],
                            "description": "Only with the bearer token, once certified: the "
                            "owner node's receipt.",
                        },
                    },
                },
                "Receipt": {
                    "type": "object",
                    "required": [
                        "request_id",
                        "federation_id",
                        "node_address",
                        "certificate_cid",
                        "record_salt",
                        "commitment_salt",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "request_id": {"type": "string"},
                        "federation_id": {"type": "string"},
                        "node_address": {"type": "string"},
                        "certificate_cid": {"type": "string"},
                        "record_salt": _HEX32,
                        "commitment_salt": _HEX32,
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "federation_id", "rounds", "open_requests"],
                    "properties": {
                        "status": {"enum": ["ok", "down"]},
                        "federation_id": {"type": "string"},
                        "rounds": {"type": "integer"},
                        "open_requests": {"type": "integer"},
                        "problems": {"type": "array", "items": {"type": "string"}},
                        "serverapp": _PART,
                        "superlink": _PART,
                        "connected_nodes": {"type": "integer"},
                        "min_nodes": {"type": "integer"},
                        "nodes": {"type": "array", "items": {"type": "object"}},
                        "chain": _PART,
                        "store": _PART,
                        "forgets_waiting": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
        "paths": paths,
    }


def _feedback_paths() -> dict[str, Any]:
    """``POST /feedback``, its live log and the dashboard (served when feedback is on)."""
    html = {"200": {"description": "ok", "content": {"text/html": {"schema": {}}}}, **_errors()}
    body = {
        "type": "object",
        "required": ["record_id", "text"],
        "additionalProperties": False,
        "properties": {
            "record_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "pattern": RECORD_ID_PATTERN,
            },
            "text": {"type": "string", "minLength": 1},
            "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
        },
    }
    decided = {
        "type": "object",
        "required": ["record_id", "sentiment", "decision", "decided_by", "model"],
    }
    decision_body = {
        "type": "object",
        "required": ["decision", "decided_by"],
        "additionalProperties": False,
        "properties": {
            "decision": {"enum": ["forget", "keep"]},
            "decided_by": {"type": "string", "minLength": 1, "maxLength": 100},
            "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
        },
    }
    return {
        "/feedback": {
            "post": {
                "summary": (
                    "Score a text with the current global model; forget, keep or send to review"
                ),
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {
                    "200": _json(decided, "scored; kept, or its forget request already known"),
                    "202": _json(decided, "scored; a forget request was opened"),
                    **_errors(
                        (400, "bad JSON or fields"),
                        (401, "missing or wrong bearer token"),
                        (404, "to be forgotten, but no node holds this record"),
                        (413, "body larger than 16384 bytes"),
                        (415, "body is not JSON"),
                        (503, "no finalized global model yet"),
                    ),
                },
            }
        },
        "/feedback/{seq}/decision": {
            "post": {
                "summary": "A person decides a row the model sent to review (one click)",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "seq",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": decision_body}},
                },
                "responses": {
                    "200": _json(decided, "kept, or its forget request already known"),
                    "202": _json(decided, "a forget request was opened"),
                    **_errors(
                        (400, "bad JSON or fields"),
                        (401, "missing or wrong bearer token"),
                        (404, "no such feedback, or no node holds the record"),
                        (409, "the row was not sent to review, or is already decided"),
                    ),
                },
            }
        },
        "/feedback/summary": {
            "get": {
                "summary": "How many rows the model forgot, kept and sent to review",
                "security": [{"bearer": []}],
                "responses": {
                    "200": _json(
                        {"type": "object", "required": ["rows", "model", "reviewed", "shares"]},
                        "the counts",
                    ),
                    **_errors((401, "missing or wrong bearer token")),
                },
            }
        },
        "/feedback/events": {
            "get": {
                "summary": "The live log: server-sent events of feedback and forget states",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "an event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors((400, "bad since"), (401, "missing or wrong bearer token")),
                },
            }
        },
        "/dashboard": {"get": {"summary": "The feedback dashboard page", "responses": html}},
        "/dashboard.js": {
            "get": {
                "summary": "The dashboard's script (served from here: no CDN)",
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    },
                    **_errors(),
                },
            }
        },
    }
