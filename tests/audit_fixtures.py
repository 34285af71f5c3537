"""A correct federation history on the session's anvil, built once and shared read-only.

Load with ``pytest_plugins = ["tests.chain_fixtures", "tests.audit_fixtures"]``. Tests
that tamper with the store copy it first (``tests.audit_history.copy_store``); tests that
tamper with the chain build their own history.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.devnet import Devnet
from protocol.ledger import Ledger
from protocol.store import LocalStore
from tests.audit_history import History, build_correct_history
from tests.chain_fixtures import Federation, deploy_federation


@dataclass(frozen=True)
class AuditedHistory:
    """The deployed federation, its store and the history that was written to both."""

    fed: Federation
    store_dir: Path
    history: History

    @property
    def store(self) -> LocalStore:
        return LocalStore(self.store_dir)

    @property
    def ledger(self) -> Ledger:
        """A read-only view of the contract, as an outside auditor has it."""
        return Ledger.from_deployment(self.fed.deployment)


@pytest.fixture(scope="session")
def audited_history(
    devnet: Devnet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuditedHistory]:
    """Rounds 1–3 finalized, forget "forget-001" completed in round 3, round 4 pending."""
    workdir = tmp_path_factory.mktemp("audited-history")
    fed = deploy_federation(devnet)
    history = History(fed, devnet, LocalStore(workdir / "blocks"), workdir)
    build_correct_history(history)
    yield AuditedHistory(fed, workdir / "blocks", history)
    history.close()
