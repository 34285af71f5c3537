"""The import rules that keep the layers apart, checked on the source of every package.

Specifications:
- ``protocol`` (pure primitives) imports no other Lethe package, and no Flower, web3, CLI
  framework (click, typer) or HTTP server framework at module level (inside a function is
  fine: only what runs, loads them; the Kubo store's HTTP client, requests, is allowed);
- ``infra`` (shared infrastructure) imports only ``protocol``;
- ``verifier`` (the public audit, explorer, receipt check and content-store tools) imports
  only ``protocol`` and ``infra``: anyone runs it, and nothing in it is the coordinator;
- ``node`` and ``coordinator`` import ``protocol`` and ``infra``, never each other, and
  never ``launcher``; nor do their lazy CLI tables name a module of another role (the
  coordinator may import ``verifier``: its API serves the public explorer page);
- ``launcher`` (the local federation) sits on top and may import everything.
"""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

ALLOWED = {
    "protocol": {"protocol"},
    "infra": {"protocol", "infra"},
    "node": {"protocol", "infra", "node"},
    "verifier": {"protocol", "infra", "verifier"},
    "coordinator": {"protocol", "infra", "verifier", "coordinator"},
    "launcher": {"protocol", "infra", "node", "coordinator", "verifier", "launcher"},
}
HEAVY = {"flwr", "web3"}
CLI_FRAMEWORKS = {"click", "typer"}
HTTP_FRAMEWORKS = {"flask", "werkzeug", "waitress", "fastapi", "starlette", "uvicorn", "aiohttp"}
NOT_IN_PROTOCOL = HEAVY | CLI_FRAMEWORKS | HTTP_FRAMEWORKS
LAZY_COMMAND = re.compile(r"^([a-z_]+)(\.[a-z_]+)+:[a-z_]+$")


def _sources(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def _imports(tree: ast.AST) -> Iterator[tuple[str, bool]]:
    """(top-level package, imported at module level at run time) of every import."""

    def visit(node: ast.AST, module_level: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name.split(".")[0], module_level
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module.split(".")[0], module_level
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                # Never run, still a dependency of the layer.
                yield from visit(ast.Module(body=child.body, type_ignores=[]), False)
                yield from visit(ast.Module(body=child.orelse, type_ignores=[]), module_level)
            else:
                yield from visit(child, module_level)

    yield from visit(tree, True)


def _violations(package: str) -> list[str]:
    found = []
    for path in _sources(package):
        tree = ast.parse(path.read_text(), str(path))
        found += _source_violations(package, tree, path.relative_to(REPO_ROOT))
    return found


def _source_violations(package: str, tree: ast.AST, where: Path) -> list[str]:
    found = []
    for top, module_level in _imports(tree):
        if top in ALLOWED and top not in ALLOWED[package]:
            found.append(f"{where} imports {top}")
        if package == "protocol" and module_level and top in NOT_IN_PROTOCOL:
            found.append(f"{where} imports {top} at module level")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = LAZY_COMMAND.match(node.value)
            if match and match[1] in ALLOWED and match[1] not in ALLOWED[package]:
                found.append(f"{where} names {node.value}")
    return found


@pytest.mark.parametrize("package", list(ALLOWED))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    assert _sources(package), f"no sources found for {package}"
    assert _violations(package) == []


def test_imports_are_found_with_when_they_run() -> None:
    tree = ast.parse(
        "import flwr\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import web3\n"
        "def f():\n    import flask\n    from coordinator import rounds\n"
    )
    assert sorted(_imports(tree)) == [
        ("coordinator", False),
        ("flask", False),
        ("flwr", True),
        ("typing", True),
        ("web3", False),
    ]


def test_a_cli_or_http_framework_in_protocol_is_a_violation() -> None:
    lazycli = REPO_ROOT / "infra" / "lazycli.py"  # click's group: infrastructure
    where = Path("protocol/lazycli.py")
    assert _source_violations("protocol", ast.parse(lazycli.read_text()), where) == [
        f"{where} imports click at module level"
    ]
    assert _source_violations("infra", ast.parse(lazycli.read_text()), where) == []
    for top in ("flask", "werkzeug", "typer"):
        assert _source_violations("protocol", ast.parse(f"import {top}"), where)
    assert not _source_violations("protocol", ast.parse("def f():\n    import click\n"), where)
