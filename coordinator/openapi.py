"""The OpenAPI 3.1 document of the coordinator API, served at ``/openapi.json``."""

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    """Describe every endpoint, its inputs and its error answers."""
    request_ref = {"$ref": "#/components/schemas/ForgetRequest"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lethe coordinator API",
            "version": "1",
            "description": "Submit and follow forget requests; read rounds and nodes.",
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
                        "record_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                    },
                },
                "ForgetRequest": {
                    "type": "object",
                    "properties": {
                        "request_id": {"type": "string"},
                        "record_id": {"type": "string"},
                        "state": {
                            "enum": ["received", "dispatched", "certified", "completed", "failed"]
                        },
                        "reason": {"type": ["string", "null"]},
                        "node_address": {"type": ["string", "null"]},
                        "certificate_cid": {"type": ["string", "null"]},
                        "new_model_hash": {"type": ["string", "null"]},
                        "round": {"type": ["integer", "null"]},
                        "tx": {"type": "object"},
                        "history": {"type": "array"},
                    },
                },
            },
        },
        "paths": {
            "/forget": {
                "post": {
                    "summary": "Ask the federation to forget one record",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ForgetBody"}
                            }
                        },
                    },
                    "responses": {
                        "202": _json(request_ref, "accepted and queued"),
                        "200": _json(request_ref, "same request id seen before: unchanged"),
                        "400": _json(_ERROR, "bad JSON or fields"),
                        "401": _json(_ERROR, "missing or wrong bearer token"),
                        "404": _json(_ERROR, "no node holds this record"),
                        "409": _json(_ERROR, "request id already used for another record"),
                        "413": _json(_ERROR, "body too large"),
                        "415": _json(_ERROR, "body is not JSON"),
                        "503": _json(_ERROR, "no node has announced its records yet"),
                    },
                },
                "get": {
                    "summary": "List every forget request",
                    "responses": {"200": _json({"type": "array", "items": request_ref}, "ok")},
                },
            },
            "/forget/{request_id}": {
                "get": {
                    "summary": "State, transactions and certificate of one request",
                    "parameters": [
                        {
                            "name": "request_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(request_ref, "ok"),
                        "404": _json(_ERROR, "unknown request id"),
                    },
                },
            },
            "/rounds": {
                "get": {
                    "summary": "Every round",
                    "responses": {"200": _json({"type": "array"}, "ok")},
                }
            },
            "/rounds/{round}": {
                "get": {
                    "summary": "One round",
                    "parameters": [
                        {
                            "name": "round",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": {
                        "200": _json({"type": "object"}, "ok"),
                        "404": _json(_ERROR, "unknown round"),
                    },
                }
            },
            "/nodes": {
                "get": {
                    "summary": "Nodes seen by the coordinator",
                    "responses": {"200": _json({"type": "array"}, "ok")},
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness and counters",
                    "responses": {"200": _json({"type": "object"}, "ok")},
                }
            },
        },
    }
