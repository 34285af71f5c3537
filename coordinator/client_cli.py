"""`lethe forget`, `lethe status`, `lethe rounds`: the coordinator API from the command line.

Run in the folder where `lethe up` runs, they need no flags: the API address and the token
come from its work directory (``--workdir``, ``LETHE_WORKDIR``, default
``.lethe/federation``). Against any other coordinator: ``--api URL`` (``LETHE_API_URL``)
and ``--token-file`` (``LETHE_API_TOKEN_FILE``) or ``LETHE_API_TOKEN``.

Exit codes: 0 done; 1 the API refused the request, or the forget request failed; 2 a
usage error; 3 the API could not be reached.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from coordinator.client import ApiClient, ApiError
from infra.workdir import WORKDIR_ENV, WorkDir

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
TOKEN_ENV = "LETHE_API_TOKEN"


def api_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add --workdir/--api/--token-file/--json and pass an ``ApiClient`` as ``client``."""

    @click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=WORKDIR_ENV,
        help="Work directory of `lethe up` [env LETHE_WORKDIR; default .lethe/federation].",
    )
    @click.option(
        "--api",
        "api_url",
        envvar="LETHE_API_URL",
        help="Coordinator API URL [env LETHE_API_URL; default: the work directory's, "
        "else http://127.0.0.1:8080].",
    )
    @click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="LETHE_API_TOKEN_FILE",
        help=f"File holding the API token [env LETHE_API_TOKEN_FILE, or the token in "
        f"{TOKEN_ENV}; default: the work directory's coordinator/api.token].",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the API's JSON as is.")
    @functools.wraps(command)
    def wrapper(
        workdir: Path | None, api_url: str | None, token_file: Path | None, **kwargs: Any
    ) -> None:
        place = WorkDir.resolve(workdir)
        client = ApiClient(api_url or place.api_url(), _token(place, token_file))
        try:
            command(client=client, **kwargs)
        except ApiError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(EXIT_UNREACHABLE if exc.status is None else EXIT_REFUSED) from exc

    return wrapper


def _token(place: WorkDir, token_file: Path | None) -> str | None:
    if token_file is None and os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = token_file or place.api_token
    try:
        return path.read_text().strip()
    except OSError as exc:
        if token_file is not None:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
        return None  # reads need no token; forget says what is missing


def _short(value: str | None) -> str:
    return "-" if not value else (value if len(value) <= 18 else f"{value[:10]}…{value[-6:]}")


def _state_line(request: dict[str, Any]) -> str:
    tx = request.get("tx") or {}
    parts = [f"{request['state']:<10}"]
    for name in ("request", "certify", "complete"):
        if tx.get(name):
            parts.append(f"{name} tx {_short(tx[name])}")
    if request.get("certificate_cid"):
        parts.append(f"certificate {request['certificate_cid']}")
    if request.get("round") is not None:
        parts.append(f"round {request['round']}")
    if request.get("reason"):
        parts.append(f"reason: {request['reason']}")
    return " | ".join(parts)


@click.command()
@click.argument("record_id")
@click.option("--request-id", help="Your id for the request (1-64 of A-Z a-z 0-9 . _ -).")
@click.option("--wait", is_flag=True, help="Follow the request until completed or failed.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Seconds --wait waits.",
)
@api_options
def forget(
    client: ApiClient,
    record_id: str,
    request_id: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Ask the federation to forget RECORD_ID (`lethe-node records` lists ids)."""
    if not client.token:
        raise click.UsageError(
            "submitting needs the API token: run where `lethe up` runs (or give --workdir), "
            f"or give --token-file or {TOKEN_ENV}"
        )
    request, created = client.forget(record_id, request_id)
    if not as_json:
        known = "new request" if created else "already known"
        click.echo(f"request {request['request_id']} ({known}) for record {record_id!r}")
        click.echo(f"  {_state_line(request)}")
    if not wait:
        if as_json:
            click.echo(json.dumps(request, indent=2))
        return
    seen = {request["state"]}

    def on_state(state: dict[str, Any]) -> None:
        if state["state"] not in seen and not as_json:
            seen.add(state["state"])
            click.echo(f"  {_state_line(state)}")

    final = client.wait(request["request_id"], timeout=timeout, poll=0.2, on_state=on_state)
    if as_json:
        click.echo(json.dumps(final, indent=2))
    elif final["state"] == "completed":
        click.echo(f"certificate {final['certificate_cid']}")
    if final["state"] != "completed":
        click.echo(f"error: request {final['request_id']} failed: {final['reason']}", err=True)
        raise SystemExit(EXIT_REFUSED)


@click.command()
@click.argument("request_id", required=False)
@api_options
def status(client: ApiClient, request_id: str | None, as_json: bool) -> None:
    """One forget request's state and history; without REQUEST_ID, the federation's health
    (ServerApp, SuperLink, nodes, chain, store) and every request."""
    if request_id is not None:
        request = client.status(request_id)
        if as_json:
            click.echo(json.dumps(request, indent=2))
            return
        record = request.get("record_id")  # shown to token holders only
        click.echo(
            f"request {request['request_id']}"
            + (f" for record {record!r}" if record is not None else "")
        )
        click.echo(f"  {_state_line(request)}")
        for step in request.get("history", []):
            click.echo(f"  {step['state']:<10} at {_when(step.get('at'))}")
        return
    health = client.health()
    requests = client.requests()
    if as_json:
        click.echo(json.dumps({"health": health, "requests": requests}, indent=2))
        return
    _print_health(health)
    if _printed_as_is(requests, as_json, "no forget requests yet"):
        return
    for request in requests:
        click.echo(f"{request['request_id']:<34} {_state_line(request)}")


def _print_health(health: dict[str, Any]) -> None:
    click.echo(f"federation {health.get('federation_id')}: {health.get('status', '?').upper()}")
    for problem in health.get("problems", []):
        click.echo(f"  ! {problem}")
    parts = [
        ("serverapp", "ServerApp"),
        ("superlink", "SuperLink"),
        ("chain", "chain"),
        ("store", "store"),
    ]
    for key, name in parts:
        part = health.get(key)
        if isinstance(part, dict):
            detail = {k: v for k, v in part.items() if k not in ("ok", "error")}
            shown = ", ".join(f"{k} {v}" for k, v in detail.items())
            click.echo(f"  {name:<10} {'up' if part.get('ok') else 'DOWN'}  {shown}".rstrip())
    if "connected_nodes" in health:
        needed = health["min_nodes"]
        click.echo(f"  nodes      {health['connected_nodes']} connected (a round needs {needed})")
    for node in health.get("nodes", []):
        seen = "connected" if node.get("connected") else "not connected"
        click.echo(f"    {node['address']}  {seen}, last round {node.get('last_round')}")
    duplicates = health.get("duplicate_records")
    if isinstance(duplicates, list):
        for duplicate in duplicates:
            holders = ", ".join(duplicate["owners"])
            click.echo(f"  ⚠ record {duplicate['commitment']} announced by {holders}")
    elif duplicates:
        click.echo(f"  ⚠ {duplicates} record(s) announced by several nodes (token shows which)")
    for waiting in health.get("forgets_waiting", []):
        click.echo(f"  … {waiting['request_id']} {waiting['reason']}")
    click.echo("")


@click.command()
@api_options
def rounds(client: ApiClient, as_json: bool) -> None:
    """Every round: state, SISA slices, accuracy, who answered, approvals, model CID."""
    found = client.rounds()
    if _printed_as_is(found, as_json, "no rounds yet"):
        return
    for r in found:
        through = r.get("through_slice")
        slices = "all slices" if through is None else f"slices 0..{through}"
        accuracy = "n/a" if r.get("accuracy") is None else f"{r['accuracy']:.3f}"
        answered = len((r.get("responders") or {}).get("aggregate", []))
        click.echo(
            f"round {r['round']:>3} {r.get('state', '-'):<10} {slices:<12} accuracy {accuracy} "
            f"| {answered} nodes answered | approvals {len(r.get('approvals') or {})}/"
            f"{r.get('quorum', '-')} | model {r.get('global_model_cid') or '-'}"
        )


def _printed_as_is(items: list[dict[str, Any]], as_json: bool, empty: str) -> bool:
    """Print ``items`` as JSON, or ``empty`` if there are none; False: the caller prints."""
    if as_json:
        click.echo(json.dumps(items, indent=2))
    elif not items:
        click.echo(empty)
    return as_json or not items


def _when(at: object) -> str:
    if not isinstance(at, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
