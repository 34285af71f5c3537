"""`lethe receipt`: the data subject's receipt, from the API that asked for the forget.

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

from coordinator.client import ApiClient
from coordinator.client_cli import api_options


@click.command()
@click.argument("request_id")
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the receipt to this file (owner-only) instead of printing it.",
)
@api_options
def receipt(client: ApiClient, request_id: str, out: Path | None, as_json: bool) -> None:
    """Print the receipt of a certified forget request (needs the API token): what the
    data subject needs to check their certificate. Keep it private: its salts let whoever
    holds it recognise the record."""
    del as_json  # a receipt is JSON either way
    if not client.token:
        raise click.UsageError("the receipt needs the API token (--token-file or LETHE_API_TOKEN)")
    text = json.dumps(client.receipt(request_id), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    from protocol.files import write_secret

    write_secret(out, text.encode())
    click.echo(f"receipt of {request_id} written to {out}")
