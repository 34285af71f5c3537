"""`lethe check-receipt`: the data subject's proof that they were forgotten (`lethe receipt` gets
the receipt from the API, in ``coordinator.receipt_cli``).

Certificates name a record only by a salted leaf, so nobody can recognise it from a list of
candidate ids. The owner node returns the record's salts in a receipt, which the API gives
to the token holder who asked for the forget (`lethe receipt`); with it and the record's id,
text and label, `lethe check-receipt` fetches the certificate by CID and checks it is valid,
signed by the node, for this request, and about this record.

Exit codes: 0 the certificate is about the record; 1 it is not, or it does not verify (or
the API refused); 2 a usage error; 3 the API or the store could not be reached.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from infra.workdir import WORKDIR_ENV, WorkDir
from verifier.store_cli import store_location_option

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3


@click.command("check-receipt")
@click.argument("receipt_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--record",
    "record_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Your record as JSON {"id", "text", "label"} (`lethe-node records --json`), '
    "instead of the three options below.",
)
@click.option("--record-id", help="Your record's id.")
@click.option("--text", help="Your record's text, exactly as you gave it.")
@click.option("--label", help="Your record's label, e.g. negative.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=WORKDIR_ENV,
    help="Work directory of `lethe up`, whose store is read when --store is not given.",
)
@store_location_option
def check_receipt(
    receipt_file: Path,
    record_file: Path | None,
    record_id: str | None,
    text: str | None,
    label: str | None,
    workdir: Path | None,
    store_spec: str | None,
) -> None:
    """Check that the certificate named by RECEIPT_FILE is about your record."""
    from protocol.certificate import Certificate
    from protocol.errors import ProtocolError, StoreError
    from protocol.receipt import Receipt
    from protocol.store import open_store

    try:
        given = Receipt.from_json(json.loads(receipt_file.read_text()))
    except (ValueError, ProtocolError) as exc:
        raise click.BadParameter(f"{receipt_file} is not a receipt: {exc}") from exc
    if record_file is not None:
        try:
            mine = json.loads(record_file.read_text())
            record_id, text, label = (str(mine[k]) for k in ("id", "text", "label"))
        except (ValueError, KeyError, TypeError) as exc:
            raise click.BadParameter(
                f'{record_file} is not a JSON object with "id", "text" and "label"'
            ) from exc
    if record_id is None or text is None or label is None:
        raise click.UsageError("give --record FILE, or --record-id, --text and --label")
    spec = store_spec or str(WorkDir.resolve(workdir).store)
    try:
        data = open_store(spec).get(given.certificate_cid)
    except StoreError as exc:
        click.echo(f"error: cannot fetch certificate {given.certificate_cid}: {exc}", err=True)
        raise SystemExit(EXIT_UNREACHABLE) from exc
    try:
        signer = given.check(Certificate.from_bytes(data), record_id, text, label)
    except ProtocolError as exc:
        click.echo(f"✗ certificate {given.certificate_cid}: {exc}", err=True)
        raise SystemExit(EXIT_REFUSED) from exc
    click.echo(
        f"✓ certificate {given.certificate_cid} is about record {record_id!r}: request "
        f"{given.request_id}, signed by node {signer}"
    )
