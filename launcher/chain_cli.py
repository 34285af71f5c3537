"""The chain's command line: `lethe devnet`, `deploy`, `admit`, `stake-policy`, `fund`, `slash`
and `build-contract`."""

import json
from pathlib import Path

import click

from infra.net import port_free
from infra.options import deployment_option
from infra.workdir import WorkDir
from launcher.devnet import (
    DEFAULT_STATE_FILE,
    DEV_CHAIN_ID,
    Devnet,
    dev_accounts,
    is_dev_key,
    save_devnet_info,
)
from launcher.invite_cli import workdir_option
from protocol.errors import LetheError
from protocol.ledger import (
    PRIVATE_KEY_ENV,
    RPC_URL_ENV,
    Deployment,
    Ledger,
    rpc_chain_id,
)
from protocol.ledger import deploy as deploy_contract
from protocol.stakes import format_ether, parse_ether

DEVNET_INFO = "devnet.json"
DEVNET_PORT = 8545


def _devnet_info_path(state_file: Path) -> Path:
    return state_file.parent / DEVNET_INFO


def _running_devnet_url() -> str | None:
    info = _devnet_info_path(DEFAULT_STATE_FILE)
    if not info.is_file():
        return None
    return str(json.loads(info.read_text(encoding="utf-8"))["rpc_url"])


def _resolve_rpc(rpc: str | None) -> str:
    """--rpc / $LETHE_RPC_URL, else the devnet `lethe devnet` says it is running."""
    url = rpc or _running_devnet_url()
    if url is None:
        raise click.UsageError(
            f"no RPC endpoint: pass --rpc, set {RPC_URL_ENV}, or start `lethe devnet` first"
        )
    return url


def _default_devnet_port() -> int:
    """anvil's usual 8545 when free, so deployment files stay valid across restarts."""
    return DEVNET_PORT if port_free(DEVNET_PORT) else 0


def _resolve_key(key: str | None, dev_account: int | None, chain_id: int) -> str:
    """The signing key; DEV-ONLY keys are refused on anything but a local dev chain."""
    if key and dev_account is not None:
        raise click.UsageError("give either --key or --dev-account, not both")
    if key is None:
        if chain_id != DEV_CHAIN_ID:
            if dev_account is not None:
                raise click.UsageError(f"refusing a DEV-ONLY account on chain {chain_id}")
            raise click.UsageError(
                f"chain {chain_id} is not a dev chain: pass --key or set {PRIVATE_KEY_ENV}"
            )
        index = 0 if dev_account is None else dev_account
        if not 0 <= index < len(dev_accounts()):
            raise click.UsageError(f"--dev-account must be 0..{len(dev_accounts()) - 1}")
        key = dev_accounts()[index].private_key
    if chain_id != DEV_CHAIN_ID and is_dev_key(key):
        raise click.UsageError(
            f"refusing a public DEV-ONLY key on chain {chain_id}: anyone can sign with it"
        )
    return key


rpc_option = click.option(
    "--rpc", envvar=RPC_URL_ENV, help=f"JSON-RPC URL [env {RPC_URL_ENV}; default: running devnet]"
)
key_option = click.option(
    "--key",
    envvar=PRIVATE_KEY_ENV,
    help=f"Hex private key [env {PRIVATE_KEY_ENV}, preferred over the flag: shell history]",
)
dev_account_option = click.option(
    "--dev-account",
    type=int,
    help="Sign with DEV-ONLY account N of the dev mnemonic (dev chain only; default 0).",
)


@click.command()
@click.option(
    "--state",
    "state_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_STATE_FILE,
    show_default=True,
    help="Chain snapshot: loaded at start if present, rewritten atomically at each new block.",
)
@click.option(
    "--port", type=int, help=f"Port; 0 picks a free one [default: {DEVNET_PORT} if free, else 0]."
)
def devnet(state_file: Path, port: int | None) -> None:
    """Run a local dev chain (anvil on 127.0.0.1) in the foreground until Ctrl-C."""
    if port is None:
        port = _default_devnet_port()
    chain = Devnet(state_file, port=port, log_file=state_file.parent / "anvil.log")
    info = _devnet_info_path(state_file)
    try:
        chain.start()
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        save_devnet_info(chain, info)
        click.echo(f"RPC URL     {chain.rpc_url}")
        click.echo(f"chain id    {chain.chain_id}")
        click.echo(f"state file  {state_file}")
        click.echo(f"anvil log   {chain.log_file}")
        click.echo("")
        click.echo("DEV-ONLY accounts (public test mnemonic: NEVER use these keys on a real chain)")
        for account in chain.accounts:
            click.echo(f"  ({account.index}) {account.address}  {account.private_key}")
        click.echo("")
        click.echo(f"next: lethe deploy   (or export {RPC_URL_ENV}={chain.rpc_url})")
        click.echo("Ctrl-C stops the chain and saves its state.")
        code = chain.wait()
        raise click.ClickException(f"anvil exited unexpectedly with code {code}")
    except KeyboardInterrupt:
        click.echo("\nstopping: taking a last snapshot of the chain")
    finally:
        chain.stop()
        info.unlink(missing_ok=True)


@click.command()
@rpc_option
@key_option
@dev_account_option
@click.option("--coordinator", help="Admit this address as coordinator at deployment.")
@click.option(
    "--quorum", type=click.IntRange(min=0), default=0, show_default=True,
    help="Approvals a round needs; 0 = ⌈2n/3⌉ of admitted nodes.",
)  # fmt: skip
@deployment_option("--out", "Where to write the deployment file")
def deploy(
    rpc: str | None,
    key: str | None,
    dev_account: int | None,
    coordinator: str | None,
    quorum: int,
    deployment_file: Path,
) -> None:
    """Deploy the Lethe contract and write the deployment file."""
    rpc_url = _resolve_rpc(rpc)
    try:
        signer = _resolve_key(key, dev_account, rpc_chain_id(rpc_url))
        deployment = deploy_contract(rpc_url, signer, coordinator=coordinator, quorum=quorum)
    except (LetheError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    deployment.save(deployment_file)
    click.echo(f"Lethe deployed at {deployment.address} on chain {deployment.chain_id}")
    click.echo(f"  block {deployment.block_number}, tx {deployment.tx_hash}")
    click.echo(f"  deployment file {deployment_file}")


@click.command()
@rpc_option
@key_option
@dev_account_option
@deployment_option("--deployment", "Deployment file")
@click.option("--coordinator", help="Admit (or replace) the coordinator.")
@click.option("--node", "nodes", multiple=True, help="Admit a node (repeatable).")
@click.option("--quorum", type=click.IntRange(min=0), help="Set the quorum (0 = ⌈2n/3⌉).")
@click.option(
    "--noise",
    type=click.FloatRange(0, 0.5),
    help="Set σ of the noise the nodes add inside every later round's secure sum "
    "(model units per coordinate of the global model; README, 'Noise inside the sum').",
)
@workdir_option
@click.argument("request", type=click.Path(path_type=Path, dir_okay=False), required=False)
def admit(
    rpc: str | None,
    key: str | None,
    dev_account: int | None,
    deployment_file: Path,
    coordinator: str | None,
    nodes: tuple[str, ...],
    quorum: int | None,
    noise: float | None,
    workdir: Path | None,
    request: Path | None,
) -> None:
    """As the contract owner: admit the coordinator and nodes, set the quorum and the noise.

    With REQUEST (the file `lethe-node join --invite` printed): check its one-time code
    and signature, admit its address, register its SuperNode key if the invitation said
    so, and send it the federation's record key sealed to its share key (the work
    directory's federation, see `lethe invite`).
    """
    if request is not None:
        from launcher.invite_cli import admit_request

        if coordinator is not None or nodes or quorum is not None or noise is not None:
            raise click.UsageError(
                "give REQUEST alone, or --coordinator / --node / --quorum / --noise"
            )
        place = WorkDir.resolve(workdir)
        rpc_url = place.rpc_url() or _resolve_rpc(rpc)
        admit_request(request, workdir, _resolve_key(key, dev_account, rpc_chain_id(rpc_url)))
        return
    if coordinator is None and not nodes and quorum is None and noise is None:
        raise click.UsageError(
            "nothing to do: give REQUEST, or --coordinator, --node, --quorum or --noise"
        )
    try:
        deployment = Deployment.load(deployment_file)
        if rpc is None and deployment.chain_id == DEV_CHAIN_ID:
            # A restarted devnet may listen elsewhere than when the contract was deployed.
            rpc = _running_devnet_url()
        ledger = Ledger.from_deployment(deployment, rpc_url=rpc)
        ledger = ledger.with_account(_resolve_key(key, dev_account, ledger.chain_id))
        if coordinator is not None:
            click.echo(
                f"coordinator {coordinator}: tx {ledger.admit_coordinator(coordinator).tx_hash}"
            )
        for node in nodes:
            click.echo(f"node {node}: tx {ledger.admit_node(node).tx_hash}")
        if quorum is not None:
            click.echo(f"quorum {quorum}: tx {ledger.set_quorum(quorum).tx_hash}")
        if noise is not None:
            click.echo(f"noise σ {noise}: tx {ledger.set_noise_scale(noise).tx_hash}")
    except (LetheError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _signing_ledger(
    rpc: str | None, key: str | None, dev_account: int | None, deployment_file: Path
) -> Ledger:
    """The deployed contract, signing with --key / --dev-account."""
    deployment = Deployment.load(deployment_file)
    if rpc is None and deployment.chain_id == DEV_CHAIN_ID:
        rpc = _running_devnet_url()
    ledger = Ledger.from_deployment(deployment, rpc_url=rpc)
    return ledger.with_account(_resolve_key(key, dev_account, ledger.chain_id))


def _ether_or_zero(text: str) -> int:
    return parse_ether(text, allow_zero=True)


@click.command("stake-policy")
@rpc_option
@key_option
@dev_account_option
@deployment_option("--deployment", "Deployment file")
@click.option("--stake", "required", help="Ether a node must stake to be admitted (0: none).")
@click.option("--slash", "slash_amount", help="Ether slashed for a missed forget deadline.")
@click.option("--reward", help="Ether each approver of a finalized round earns.")
@click.option(
    "--forget-deadline", type=click.IntRange(min=0), help="Blocks a node has to certify (0: none)."
)
@click.option(
    "--unstake-delay",
    type=click.IntRange(min=0),
    help="Blocks between asking to unstake and leaving.",
)
def stake_policy(
    rpc: str | None,
    key: str | None,
    dev_account: int | None,
    deployment_file: Path,
    required: str | None,
    slash_amount: str | None,
    reward: str | None,
    forget_deadline: int | None,
    unstake_delay: int | None,
) -> None:
    """As the contract owner: set the stake, slash, reward, deadline and delay (unset keep theirs).

    With no option, print the policy in force.
    """
    from protocol.ledger import StakePolicy

    try:
        ledger = _signing_ledger(rpc, key, dev_account, deployment_file)
        now = ledger.stake_policy()
        given = (required, slash_amount, reward, forget_deadline, unstake_delay)
        if any(v is not None for v in given):
            policy = StakePolicy(
                required_stake=now.required_stake if required is None else _ether_or_zero(required),
                slash_amount=(
                    now.slash_amount if slash_amount is None else _ether_or_zero(slash_amount)
                ),
                reward_per_round=now.reward_per_round if reward is None else _ether_or_zero(reward),
                forget_deadline_blocks=(
                    now.forget_deadline_blocks if forget_deadline is None else forget_deadline
                ),
                unstake_delay_blocks=(
                    now.unstake_delay_blocks if unstake_delay is None else unstake_delay
                ),
            )
            click.echo(f"stake policy set: tx {ledger.set_stake_policy(policy).tx_hash}")
            now = ledger.stake_policy()
    except (LetheError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"stake to join     {format_ether(now.required_stake)}")
    click.echo(f"slash per miss    {format_ether(now.slash_amount)}")
    click.echo(f"reward per round  {format_ether(now.reward_per_round)}")
    click.echo(f"forget deadline   {now.forget_deadline_blocks} blocks")
    click.echo(f"unstake delay     {now.unstake_delay_blocks} blocks")


@click.command()
@rpc_option
@key_option
@dev_account_option
@deployment_option("--deployment", "Deployment file")
@click.option("--amount", required=True, help="Ether to add to the reward pool, e.g. 0.5.")
def fund(
    rpc: str | None, key: str | None, dev_account: int | None, deployment_file: Path, amount: str
) -> None:
    """Add ether to the reward pool that pays nodes for the rounds they approve."""
    try:
        ledger = _signing_ledger(rpc, key, dev_account, deployment_file)
        tx = ledger.fund(parse_ether(amount))
        pool = ledger.reward_pool()
    except (LetheError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"funded {amount} ETH (tx {tx.tx_hash}); reward pool now {format_ether(pool)}")


@click.command()
@rpc_option
@key_option
@dev_account_option
@deployment_option("--deployment", "Deployment file")
@click.argument("request_id")
def slash(
    rpc: str | None,
    key: str | None,
    dev_account: int | None,
    deployment_file: Path,
    request_id: str,
) -> None:
    """Anyone: slash the node that let forget request REQUEST_ID (0x + 64 hex) pass its deadline."""
    try:
        raw = bytes.fromhex(request_id.removeprefix("0x"))
        ledger = _signing_ledger(rpc, key, dev_account, deployment_file)
        tx = ledger.slash(raw)
    except (LetheError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    [event] = [
        e
        for e in ledger.events(["ForgetSlashed"], from_block=tx.block_number)
        if e.tx_hash == tx.tx_hash
    ]
    click.echo(
        f"slashed {event.args['node']}: {format_ether(int(event.args['amount']))} to the reward "
        f"pool (tx {tx.tx_hash})"
    )


@click.command("build-contract")
def build_contract() -> None:
    """Recompile contracts/Lethe.sol offline and rewrite contracts/build/ (commit the result)."""
    from coordinator.contract_build import write_artifacts

    try:
        for path in write_artifacts():
            click.echo(f"wrote {path}")
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc
