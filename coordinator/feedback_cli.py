"""`lethe feedback FILE.csv`: score every row of a feedback file and forget per the policy.

Each row goes to the coordinator's ``POST /feedback`` (the federation's current global
model decides its sentiment; the coordinator's policy decides whether the record is
forgotten), one at a time, with a progress bar; ``--wait`` then follows every forget
request it opened to ``completed``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import click

from coordinator.client import DONE_STATES, ApiClient, ApiError
from coordinator.client_cli import EXIT_REFUSED, TOKEN_ENV, api_options
from infra.csvfile import CsvColumns, CsvFileError, cli_encoding


@click.command()
@click.argument("csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id-col", default="id", show_default=True, help="The column of record ids.")
@click.option("--text-col", default="text", show_default=True, help="The column of texts.")
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="The file's encoding (any ASCII-based codec: utf-8, latin-1, cp1252, …).",
)
@click.option("--wait", is_flag=True, help="Follow the forget requests until each is done.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="Seconds --wait waits in all.",
)
@api_options
def feedback(
    client: ApiClient,
    csv_path: Path,
    id_col: str,
    text_col: str,
    encoding: str,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Score each row's text with the federation's global model; forget per the policy."""
    from tqdm import tqdm

    if not client.token:
        raise click.UsageError(
            "feedback needs the API token: run where `lethe up` runs (or give --workdir), "
            f"or give --token-file or {TOKEN_ENV}"
        )
    try:
        table = CsvColumns(csv_path, {"id": id_col, "text": text_col}, cli_encoding(encoding))
        total = sum(1 for _ in table.rows())
        results: list[dict[str, Any]] = []
        refused: list[str] = []
        with tqdm(total=total, unit="row", desc="scoring", disable=as_json) as bar:
            for line, cells, problem in table.rows():
                bar.update(1)
                if cells is None:
                    refused.append(problem or f"line {line}: unreadable row")
                    continue
                try:
                    results.append(client.feedback(cells["id"].strip(), cells["text"]))
                except ApiError as exc:
                    if exc.status is None:
                        raise
                    refused.append(f"line {line}: {exc}")
    except CsvFileError as exc:
        raise click.ClickException(str(exc)) from exc
    requests = {r["forget"]["request_id"] for r in results if r.get("forget")}
    finals: dict[str, dict[str, Any]] = {}
    if wait and requests:
        finals = _follow(client, sorted(requests), timeout, quiet=as_json)
    if as_json:
        for r in results:
            if r.get("forget") and r["forget"]["request_id"] in finals:
                r["forget"] = finals[r["forget"]["request_id"]]
        click.echo(json.dumps({"results": results, "refused": refused}, indent=2))
    else:
        labels = Counter(r["sentiment"]["label"] for r in results)
        model = results[0]["model"] if results else None
        click.echo(
            f"scored {len(results)} row(s)"
            + (
                f" with the global model of round {model['round']} ({model['cid']})"
                if model
                else ""
            )
            + ": "
            + ", ".join(f"{n} {label}" for label, n in sorted(labels.items()))
        )
        decisions = Counter(r["decision"] for r in results)
        click.echo(
            f"decisions: {decisions['forget']} forget, {decisions['keep']} keep, "
            f"{decisions['review']} review"
            + (" (a person decides these in /dashboard)" if decisions["review"] else "")
        )
        click.echo(f"forget requests: {len(requests)}")
        if finals:
            states = Counter(f["state"] for f in finals.values())
            click.echo("  " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        for problem in refused[:20]:
            click.echo(f"refused: {problem}", err=True)
    failed = [f for f in finals.values() if f["state"] != "completed"]
    if refused or failed:
        raise SystemExit(EXIT_REFUSED)


def _follow(
    client: ApiClient, request_ids: list[str], timeout: float, *, quiet: bool
) -> dict[str, dict[str, Any]]:
    """Poll every request until done (or the time is up); return their last states."""
    import time

    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    finals: dict[str, dict[str, Any]] = {}
    with tqdm(total=len(request_ids), unit="forget", desc="forgetting", disable=quiet) as bar:
        while True:
            for request_id in request_ids:
                if request_id in finals and finals[request_id]["state"] in DONE_STATES:
                    continue
                finals[request_id] = client.status(request_id)
                if finals[request_id]["state"] in DONE_STATES:
                    bar.update(1)
            if all(f["state"] in DONE_STATES for f in finals.values()):
                return finals
            if time.monotonic() >= deadline:
                return finals
            time.sleep(0.5)
