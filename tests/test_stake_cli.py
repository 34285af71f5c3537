"""`lethe stake-policy | fund | slash` and `lethe-node stake | unstake | rewards | claim`, on anvil.

Specifications:
- a node stakes from its key file before it has a node.json, and is then admitted;
- `rewards` lists exactly the finalized rounds the node approved and has not claimed, and
  `claim` takes them (the pool shrinks by that much, a second claim finds nothing);
- a claim the pool cannot cover is refused with a message naming `lethe fund`;
- `unstake` starts the delay, refuses to withdraw before it ends, then withdraws;
- `lethe slash` slashes a node that let a forget deadline pass, and says whom and how much;
- bad amounts are refused with a one-line error, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from launcher.cli import main as lethe_main
from node.cli import main as node_main
from protocol.hashing import keccak256
from protocol.ledger import Deployment, Ledger
from tests.records_proofs import committed

if TYPE_CHECKING:
    from launcher.devnet import Devnet

pytest_plugins = ["tests.chain_fixtures"]

CLEAN_ENV = {
    "LETHE_RPC_URL": None,
    "LETHE_PRIVATE_KEY": None,
    "LETHE_DEPLOYMENT": None,
    "LETHE_CONTRACT": None,
}
ETHER = 10**18


def lethe(*args: str) -> Result:
    return CliRunner().invoke(lethe_main, list(args), env=CLEAN_ENV, catch_exceptions=False)


def lethe_node(*args: str) -> Result:
    return CliRunner().invoke(node_main, list(args), env=CLEAN_ENV, catch_exceptions=False)


class Chain:
    """A deployment made by `lethe deploy`, a key file per node, ledgers for the other roles."""

    def __init__(self, devnet: Devnet, tmp_path: Path) -> None:
        self.devnet = devnet
        self.file = tmp_path / "deployment.json"
        coordinator = devnet.accounts[1]
        ok(lethe("deploy", "--rpc", devnet.rpc_url, "--coordinator", coordinator.address,
                 "--out", str(self.file)))  # fmt: skip
        self.deployment = Deployment.load(self.file)
        self.owner = Ledger.from_deployment(self.file, private_key=devnet.accounts[0].private_key)
        self.coordinator = self.owner.with_account(coordinator.private_key)
        self.keys: list[Path] = []
        for i, account in enumerate(devnet.accounts[2:5]):
            path = tmp_path / f"node{i}.key"
            path.write_text(account.private_key + "\n")
            self.keys.append(path)
        self.nodes = [self.owner.with_account(a.private_key) for a in devnet.accounts[2:5]]

    def node(self, i: int, *args: str) -> Result:
        where = ["--rpc", self.devnet.rpc_url, "--contract", self.deployment.address]
        return lethe_node(*args, *where, "--eth-key-file", str(self.keys[i]))

    def owner_cli(self, *args: str) -> Result:
        return lethe(*args, "--deployment", str(self.file))

    def mine(self, blocks: int) -> None:
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(self.devnet.rpc_url))
        w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    def round(self, number: int, approvers: list[int]) -> None:
        model, root = keccak256(b"m%d" % number), keccak256(b"r%d" % number)
        self.coordinator.propose_round(number, model, "bafy-m", root, "bafy-x")
        for i in approvers:
            self.nodes[i].approve_round(number, model, root)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def chain(devnet: Devnet, tmp_path: Path) -> Chain:
    chain = Chain(devnet, tmp_path)
    ok(chain.owner_cli("stake-policy", "--stake", "1", "--slash", "0.25", "--reward", "0.01",
                       "--forget-deadline", "5", "--unstake-delay", "8"))  # fmt: skip
    for i, node in enumerate(chain.nodes):
        ok(chain.node(i, "stake", "--amount", "1"))
        ok(lethe("admit", "--deployment", str(chain.file), "--node", str(node.account)))
    return chain


def test_policy_stake_and_admission(chain: Chain) -> None:
    shown = ok(chain.owner_cli("stake-policy")).output
    assert "stake to join     1 ETH" in shown and "forget deadline   5 blocks" in shown
    assert all(chain.owner.is_node(str(n.account)) for n in chain.nodes)
    assert chain.owner.stake_of(str(chain.nodes[0].account)).amount == ETHER


def test_rewards_then_claim_takes_exactly_the_unclaimed_finalized_rounds(chain: Chain) -> None:
    chain.round(1, [0, 1, 2])
    chain.round(2, [0, 1])
    chain.round(3, [0])  # not finalized: 1 of 2
    short = chain.node(0, "claim")
    assert short.exit_code == 1 and "lethe fund" in short.output
    ok(chain.owner_cli("fund", "--amount", "0.05"))
    shown = json.loads(ok(chain.node(0, "rewards", "--json")).output)
    assert shown["claimable_rounds"] == [1, 2]
    assert shown["rewards_claimable_wei"] == 2 * ETHER // 100
    assert shown["reward_pool_wei"] == 5 * ETHER // 100
    assert "claimed 0.02 ETH for 2 round(s)" in ok(chain.node(0, "claim")).output
    assert "nothing to claim" in ok(chain.node(0, "claim")).output
    assert chain.owner.reward_pool() == 3 * ETHER // 100
    after = ok(chain.node(0, "rewards")).output
    assert "claimed    0.02 ETH (2 rounds)" in after and "claimable  0 ETH" in after


def test_unstake_waits_for_the_delay(chain: Chain) -> None:
    assert "run again from block" in ok(chain.node(2, "unstake")).output
    locked = chain.node(2, "unstake")
    assert locked.exit_code == 1 and "locked until block" in locked.output
    chain.mine(8)
    assert "withdrew 1 ETH" in ok(chain.node(2, "unstake")).output
    assert not chain.owner.is_node(str(chain.nodes[2].account))
    assert "nothing staked" in chain.node(2, "unstake").output


def test_anyone_slashes_a_missed_deadline_from_the_command_line(chain: Chain) -> None:
    request_id = keccak256(b"request")
    node = str(chain.nodes[1].account)
    chain.round(1, [0, 1, 2])  # finalized: node 1 committed to its records in it
    record = keccak256(b"record")
    proof = committed(chain.nodes[1], chain.devnet.accounts[3].private_key, record, 1)
    chain.coordinator.request_forget(request_id, record, node, proof)
    early = lethe("slash", "0x" + request_id.hex(), "--deployment", str(chain.file),
                  "--dev-account", "9")  # fmt: skip
    assert early.exit_code == 1 and "DeadlineNotPassed" in early.output
    chain.mine(5)
    result = ok(lethe("slash", "0x" + request_id.hex(), "--deployment", str(chain.file),
                      "--dev-account", "9"))  # fmt: skip
    assert f"slashed {node}: 0.25 ETH to the reward pool" in result.output
    shown = json.loads(ok(chain.node(1, "rewards", "--json")).output)
    assert shown["slashed_wei"] == ETHER // 4 and shown["stake_wei"] == 3 * ETHER // 4
    assert shown["slashed_requests"] == ["0x" + request_id.hex()]


@pytest.mark.parametrize("amount", ["0", "-1", "lots", "1e-30"])
def test_bad_amounts_are_refused_with_a_message(chain: Chain, amount: str) -> None:
    for result in (chain.node(0, "stake", "--amount", amount),
                   chain.owner_cli("fund", "--amount", amount)):  # fmt: skip
        assert result.exit_code == 1 and "amount of ether" in result.output


def test_a_node_names_its_chain_or_its_config(chain: Chain) -> None:
    result = lethe_node("rewards")
    assert result.exit_code == 2 and "give --config" in result.output
