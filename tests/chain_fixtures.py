"""A real anvil chain for the tests, and a freshly deployed federation on it per test.

Load with ``pytest_plugins = ["tests.chain_fixtures"]`` (import names from here only under
``TYPE_CHECKING``, so pytest registers the plugin before anything imports it). One anvil
process serves the session (started and stopped by the ``devnet`` fixture); each test that
asks for ``federation`` gets its own contract, so tests never see each other's state.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from launcher.devnet import Devnet
from protocol.ledger import Deployment, Ledger, deploy

NODE_COUNT = 3


@dataclass(frozen=True)
class Federation:
    """A deployed contract and a ledger per role, each signing with its own dev account."""

    deployment: Deployment
    owner: Ledger
    coordinator: Ledger
    nodes: list[Ledger]
    outsider: Ledger
    node_keys: tuple[str, ...] = ()
    """Each node's private key, in ``nodes`` order: what signs its records roots."""

    @property
    def node_addresses(self) -> list[str]:
        return [str(n.account) for n in self.nodes]


def deploy_federation(chain: Devnet, nodes: int = NODE_COUNT) -> Federation:
    """Deploy with account 0 as owner and 1 as coordinator, admit ``nodes`` nodes after them."""
    rpc_url, accounts = chain.rpc_url, chain.accounts
    owner_account, coordinator_account = accounts[0], accounts[1]
    node_accounts = accounts[2 : 2 + nodes]
    deployment = deploy(rpc_url, owner_account.private_key, coordinator=coordinator_account.address)
    owner = Ledger.from_deployment(deployment, private_key=owner_account.private_key)
    for account in node_accounts:
        owner.admit_node(account.address)
    return Federation(
        deployment=deployment,
        owner=owner,
        coordinator=owner.with_account(coordinator_account.private_key),
        nodes=[owner.with_account(a.private_key) for a in node_accounts],
        outsider=owner.with_account(accounts[-1].private_key),
        node_keys=tuple(a.private_key for a in node_accounts),
    )


@pytest.fixture(scope="session")
def devnet() -> Iterator[Devnet]:
    """One anvil process on a free loopback port for the whole session."""
    with Devnet() as chain:
        yield chain


StartFederation = Callable[[Devnet, int], Federation]


@pytest.fixture
def start_federation() -> StartFederation:
    """Deploy another federation, on any devnet, with any number of nodes."""
    return deploy_federation


@pytest.fixture
def federation(devnet: Devnet) -> Federation:
    """A fresh contract with a coordinator and three admitted nodes (no keys yet)."""
    return deploy_federation(devnet)
