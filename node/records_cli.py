"""`lethe-node records`: the ids of the records a node holds, to name one in a forget request.

Record ids are private to the node (only their commitments leave it); this reads the
node's own file, so only who runs the node, or the data subject it gave the id to, sees them.
"""

from pathlib import Path

import click


@click.command()
@click.option(
    "--db",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The node's SQLite file (`lethe up` puts node i's at <workdir>/node-<i>/node.sqlite).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    help="Print only N ids, spread evenly over the sorted ids (the same ones every time).",
)
@click.option("--id", "only", multiple=True, help="Only this record (repeatable).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per line with the record's id, text and label: the copy a data "
    "subject keeps to check a certificate later (`lethe check-receipt --record`).",
)
def records(db: Path, sample: int | None, only: tuple[str, ...], as_json: bool) -> None:
    """Print the id of every training record the node holds, one per line, sorted."""
    import json

    from node.store import RecordStore
    from protocol.errors import LetheError

    try:
        with RecordStore.open(db) as store:
            ids = store.record_ids()
            if only:
                missing = sorted(set(only) - set(ids))
                if missing:
                    raise click.ClickException(f"no record {missing[0]!r} on this node")
                ids = sorted(set(only))
            if sample is not None and sample < len(ids):
                ids = [ids[(2 * i + 1) * len(ids) // (2 * sample)] for i in range(sample)]
            held = store.records(ids) if as_json else []
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc
    for record in held:
        click.echo(json.dumps({"id": record.id, "text": record.text, "label": record.label}))
    if not as_json:
        for record_id in ids:
            click.echo(record_id)
