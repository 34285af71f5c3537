"""`lethe api` and `lethe configure`: the coordinator's HTTP API and its config file."""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from coordinator.config import ConfigError, CoordinatorConfig
from coordinator.queue import CoordinatorDB
from infra.options import chain_options, store_option
from protocol.federation import DEFAULT_SHARDS, DEFAULT_SLICES

if TYPE_CHECKING:
    from coordinator.feedback import FeedbackService


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The coordinator's coordinator.json.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Requests per second per client address without the token (0: no limit).",
)
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Requests a client may send at once before the rate applies.",
)
def api(
    config_path: str, host: str, port: int, threads: int, rate_limit: float, burst: int
) -> None:
    """Serve the coordinator's HTTP API (forget requests, rounds, nodes, explorer,
    feedback and its dashboard).

    Runs on waitress (a production WSGI server) and logs one line per request.
    """
    from coordinator.api import create_app
    from coordinator.ratelimit import RateLimiter
    from coordinator.server import serve

    config = CoordinatorConfig.load(config_path)
    db = CoordinatorDB(Path(config.db))
    app = create_app(
        db,
        token=config.api_token(),
        record_key=config.record_key(),
        explorer=_explorer(config, db),
        rate_limit=RateLimiter(rate_limit, burst) if rate_limit > 0 else None,
        health=_health(config, db),
        feedback=_feedback(config, db),
    )
    serve(app, host, port, threads=threads)


def _feedback(config: CoordinatorConfig, db: CoordinatorDB) -> "FeedbackService":
    """Feedback scored by the latest finalized global model, under the configured policy."""
    from coordinator.feedback import FeedbackLog, FeedbackPolicy, FeedbackService, GlobalModelScorer
    from protocol.store import open_store

    store = open_store(config.store)
    return FeedbackService(
        scorer=GlobalModelScorer(
            db, store, labels=config.labels, temperature=config.feedback_temperature
        ),
        policy=FeedbackPolicy(config.feedback_forget_on, config.feedback_tau),
        log=FeedbackLog(db, store),
    )


def _health(config: CoordinatorConfig, db: CoordinatorDB) -> Callable[[], dict[str, Any]]:
    """The ``/health`` probe: the ServerApp's heartbeat, the chain and the store."""
    from coordinator.health import probe
    from protocol.store import open_store

    store = open_store(config.store, timeout=2.0)
    return functools.partial(
        probe, db, rpc_url=config.rpc_url, store=store, min_nodes=config.min_nodes
    )


def _explorer(config: CoordinatorConfig, db: CoordinatorDB) -> Callable[[], str]:
    """The explorer page: the audit's verdicts, kept current block by block and cached."""
    from protocol.ledger import Ledger
    from protocol.store import open_store
    from verifier.explorer import LiveExplorer

    ledger = Ledger(config.rpc_url, config.contract, deployment_block=config.deployment_block)
    return LiveExplorer(ledger, open_store(config.store), db)


@click.command()
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Where to write coordinator.json."
)
@click.option("--federation", "federation_id", required=True, help="Federation id.")
@chain_options
@click.option("--deployment-block", type=int, default=0, show_default=True)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="File holding the coordinator's Ethereum private key (hex).",
)
@store_option
@click.option(
    "--db", type=click.Path(dir_okay=False), required=True, help="The coordinator's SQLite queue."
)
@click.option(
    "--slices",
    type=click.IntRange(1, 64),
    default=DEFAULT_SLICES,
    show_default=True,
    help="Initial rounds: one per SISA slice (every node must have as many).",
)
@click.option(
    "--shards",
    type=click.IntRange(1, 64),
    default=DEFAULT_SHARDS,
    show_default=True,
    help="SISA shards per node (every node must have as many).",
)
@click.option(
    "--feedback-forget",
    default="negative,neutral",
    show_default=True,
    help="POST /feedback counts these labels' probability for forgetting the record.",
)
@click.option(
    "--feedback-tau",
    type=click.FloatRange(0.5, 1.0),
    default=0.8,
    show_default=True,
    help="The model forgets when P(forget labels) ≥ τ, keeps when P(others) ≥ τ, and sends "
    "the row to a person for review otherwise (0.5: never review).",
)
@click.option(
    "--feedback-temperature",
    type=click.FloatRange(0, 100, min_open=True),
    default=1.0,
    show_default=True,
    help="Logit temperature of the feedback scorer (make bench-sentiment fits one).",
)
def configure(
    out: str,
    federation_id: str,
    rpc: str,
    contract: str,
    deployment_block: int,
    key_file: str,
    store: str,
    db: str,
    slices: int,
    shards: int,
    feedback_forget: str,
    feedback_tau: float,
    feedback_temperature: float,
) -> None:
    """Write the coordinator's config, an API token and the federation's record key beside
    it (each kept if it exists)."""
    import secrets

    from protocol.commitments import RecordKey
    from protocol.files import write_secret

    folder = Path(out).resolve().parent
    token = folder / "api.token"
    if not token.exists():
        write_secret(token, secrets.token_urlsafe(24).encode())
    record_key = folder / "record.key"
    if not record_key.exists():
        write_secret(record_key, RecordKey.generate())
    config = CoordinatorConfig(
        federation_id=federation_id,
        rpc_url=rpc,
        contract=contract,
        coordinator_key_file=str(Path(key_file).resolve()),
        store=store,
        db=str(Path(db).resolve()),
        api_token_file=str(token),
        record_key_file=str(record_key),
        slices=slices,
        shards=shards,
        deployment_block=deployment_block,
        feedback_forget_on=tuple(x.strip() for x in feedback_forget.split(",") if x.strip()),
        feedback_tau=feedback_tau,
        feedback_temperature=feedback_temperature,
    )
    try:
        config.validate()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    config.save(Path(out))
    click.echo(
        f"wrote {out}; API token in {token}; the federation's record key in {record_key} "
        "(give it to each node over a private channel: `lethe-node join --record-key-file`)"
    )
