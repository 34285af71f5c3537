"""`lethe-node stake | unstake | rewards | claim`: a node's money with the federation.

A node stakes before the owner admits it, so these commands work from a node.json
(`--config`, written by `lethe-node join`) or, before joining, from `--rpc`, `--contract`
and `--eth-key-file`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from protocol.errors import LetheError
from protocol.ledger import CONTRACT_ENV, RPC_URL_ENV
from protocol.stakes import format_ether, parse_ether, read_stake_ledger

if TYPE_CHECKING:
    from protocol.ledger import Ledger

FC = TypeVar("FC", bound=Callable[..., object])
# Rounds per claim transaction: keeps each claim's gas well under a block's.
CLAIM_BATCH = 200


def identity_options(command: FC) -> FC:
    """Either ``--config node.json`` or the three flags it would hold."""
    for option in reversed(
        [
            click.option(
                "--config",
                "config_path",
                type=click.Path(exists=True, dir_okay=False),
                help="The node's node.json (from `lethe-node join`).",
            ),
            click.option("--rpc", envvar=RPC_URL_ENV, help=f"JSON-RPC URL [env {RPC_URL_ENV}]."),
            click.option(
                "--contract", envvar=CONTRACT_ENV, help=f"Lethe contract [env {CONTRACT_ENV}]."
            ),
            click.option(
                "--eth-key-file",
                type=click.Path(exists=True, dir_okay=False),
                help="File holding this node's Ethereum private key (hex).",
            ),
        ]
    ):
        command = option(command)
    return command


def node_ledger(
    config_path: str | None, rpc: str | None, contract: str | None, eth_key_file: str | None
) -> Ledger:
    """The contract, signing with the node's key, from node.json or the flags."""
    from node.runtime import NodeRunConfig, NodeRuntime
    from protocol.ledger import Ledger

    if config_path:
        return NodeRuntime(NodeRunConfig.load(config_path)).ledger
    missing = [n for n, v in (("--rpc", rpc), ("--contract", contract)) if not v]
    if eth_key_file is None:
        missing.append("--eth-key-file")
    if missing:
        raise click.UsageError(f"give --config, or {', '.join(missing)}")
    key = Path(str(eth_key_file)).read_text(encoding="utf-8").strip()
    return Ledger(str(rpc), str(contract), private_key=key)


@contextmanager
def _clear_errors() -> Iterator[None]:
    try:
        yield
    except (LetheError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@identity_options
@click.option("--amount", required=True, help="Ether to add to the stake, e.g. 1 or 0.25.")
def stake(
    config_path: str | None,
    rpc: str | None,
    contract: str | None,
    eth_key_file: str | None,
    amount: str,
) -> None:
    """Stake ether with the federation (the owner admits only nodes that staked enough)."""
    with _clear_errors():
        ledger = node_ledger(config_path, rpc, contract, eth_key_file)
        tx = ledger.stake(parse_ether(amount))
        status = ledger.stake_of(str(ledger.account))
        required = ledger.stake_policy().required_stake
    click.echo(f"staked {amount} ETH (tx {tx.tx_hash}); stake now {format_ether(status.amount)}")
    if status.amount < required:
        click.echo(f"note: admission needs {format_ether(required)}")


@click.command()
@identity_options
def unstake(
    config_path: str | None, rpc: str | None, contract: str | None, eth_key_file: str | None
) -> None:
    """Leave: the first call starts the unstake delay, a call after it withdraws the stake.

    Until it withdraws the node stays admitted and must still answer forget requests; it
    cannot withdraw while one naming it is open.
    """
    with _clear_errors():
        ledger = node_ledger(config_path, rpc, contract, eth_key_file)
        address = str(ledger.account)
        status = ledger.stake_of(address)
        if status.amount == 0 and status.unlock_block == 0:
            raise click.ClickException(f"{address} has nothing staked")
        if status.unlock_block == 0:
            tx = ledger.request_unstake()
            unlock = ledger.stake_of(address).unlock_block
            click.echo(f"unstake requested (tx {tx.tx_hash}); run again from block {unlock}")
            return
        now = ledger.block_number()
        if now + 1 < status.unlock_block:
            raise click.ClickException(
                f"stake locked until block {status.unlock_block} (now {now})"
            )
        if status.open_forgets:
            raise click.ClickException(
                f"{status.open_forgets} forget request(s) naming this node are open: "
                "certify them first"
            )
        tx = ledger.withdraw_stake()
    click.echo(f"withdrew {format_ether(status.amount)} (tx {tx.tx_hash}); the node has left")


@click.command()
@identity_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rewards(
    config_path: str | None,
    rpc: str | None,
    contract: str | None,
    eth_key_file: str | None,
    as_json: bool,
) -> None:
    """Show this node's stake, rewards claimed and claimable, and any slashes."""
    with _clear_errors():
        ledger = node_ledger(config_path, rpc, contract, eth_key_file)
        address = str(ledger.account)
        standing = read_stake_ledger(ledger).node(address)
        status = ledger.stake_of(address)
        pool = ledger.reward_pool()
    data = standing.as_dict()
    data.update(stake_wei=status.amount, open_forgets=status.open_forgets, reward_pool_wei=pool)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(f"node       {address}")
    click.echo(f"stake      {format_ether(status.amount)}")
    if status.unlock_block:
        click.echo(f"unstaking  unlocks at block {status.unlock_block}")
    click.echo(
        f"claimed    {format_ether(standing.claimed)} ({len(standing.claimed_rounds)} rounds)"
    )
    rounds = ", ".join(map(str, standing.claimable_rounds)) or "none"
    click.echo(f"claimable  {format_ether(standing.claimable)} (rounds: {rounds})")
    click.echo(f"slashed    {format_ether(standing.slashed)} ({len(standing.slashes)} requests)")
    click.echo(f"pool       {format_ether(pool)}")


@click.command()
@identity_options
def claim(
    config_path: str | None, rpc: str | None, contract: str | None, eth_key_file: str | None
) -> None:
    """Take the rewards of every finalized round this node approved and has not claimed."""
    with _clear_errors():
        ledger = node_ledger(config_path, rpc, contract, eth_key_file)
        standing = read_stake_ledger(ledger).node(str(ledger.account))
        rounds = standing.claimable_rounds
        if not rounds:
            click.echo("nothing to claim")
            return
        pool = ledger.reward_pool()
        if standing.claimable > pool:
            raise click.ClickException(
                f"the reward pool holds {format_ether(pool)}, less than the "
                f"{format_ether(standing.claimable)} owed: ask the owner to `lethe fund`"
            )
        for start in range(0, len(rounds), CLAIM_BATCH):
            batch = rounds[start : start + CLAIM_BATCH]
            tx = ledger.claim_rewards(batch)
            click.echo(f"claimed rounds {batch[0]}..{batch[-1]} (tx {tx.tx_hash})")
    click.echo(f"claimed {format_ether(standing.claimable)} for {len(rounds)} round(s)")
