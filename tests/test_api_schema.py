"""schemathesis against the API's OpenAPI document, served as `lethe api` serves it: every
operation, valid and invalid inputs, every built-in check (no server error; status,
content type, headers and body as documented; invalid data rejected; auth enforced)."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig

from coordinator.api import create_app
from coordinator.openapi import openapi_document
from coordinator.queue import CoordinatorDB
from tests.api_server import NODE, RECORD_KEY, RECORDS, TOKEN, commitment, serve

# Bounded for CI (2 cores): examples per operation and mode; the coverage phase adds
# its boundary values (lengths, patterns, ranges) on top.
MAX_EXAMPLES = 80
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
    }
)
schema = schemathesis.openapi.from_dict(openapi_document(explorer=False), config=CONFIG)


@pytest.fixture(scope="module")
def schema_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = CoordinatorDB(Path(tmp_path_factory.mktemp("schema")) / "coordinator.sqlite")
    db.replace_record_index(NODE, [commitment(r) for r in RECORDS])
    yield from serve(create_app(db, token=TOKEN, record_key=RECORD_KEY))


def test_the_served_document_is_the_one_tested(schema_api: str) -> None:
    served = requests.get(f"{schema_api}/openapi.json", timeout=5).json()
    assert served == openapi_document(explorer=False)


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case[Any], schema_api: str
) -> None:
    case.call_and_validate(
        base_url=schema_api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )


def test_the_document_covers_every_route_and_method(tmp_path: Path) -> None:
    db = CoordinatorDB(tmp_path / "coordinator.sqlite")
    app = create_app(db, token=TOKEN, record_key=RECORD_KEY, explorer=lambda: "<html></html>")
    routes = {
        (re.sub(r"<text:(\w+?)(?:_no)?>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    paths = openapi_document(explorer=True)["paths"]
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    assert routes == documented
    for path, ops in paths.items():
        for op in ops.values():
            assert "429" in op["responses"], path
            if "{" in path:
                assert {"400", "404"} <= set(op["responses"]), path
