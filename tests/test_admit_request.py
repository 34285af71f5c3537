"""`lethe admit REQUEST` keeps the owner the one who decides, on a real anvil chain.

Specifications:
- a request with a code the owner never issued is refused, and nobody is admitted;
- a request altered after signing (another address) is refused;
- a code admits once: a second newcomer with the same code is refused;
- an unstaked newcomer is not admitted until it staked;
- the admitted newcomer finds its record key in the owner's transaction, and only it can
  open it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from infra import mailbox
from launcher.cli import main as lethe
from protocol.envelope import generate_private_key, private_key_bytes
from protocol.invitation import AdmissionRequest, code_hash, open_record_key, share_key_hex
from protocol.ledger import StakePolicy

if TYPE_CHECKING:
    from launcher.devnet import Devnet
    from tests.chain_fixtures import Federation

pytest_plugins = ["tests.chain_fixtures"]

ETHER = 10**18
RECORD_KEY = b"cd" * 32


@pytest.fixture
def workdir(tmp_path: Path, devnet: Devnet, federation: Federation) -> Path:
    """A work directory as `lethe up` leaves it, with one code issued."""
    root = tmp_path / "fed"
    federation.deployment.save(root / "chain" / "deployment.json")
    (root / "federation.json").write_text(json.dumps({"rpc_url": devnet.rpc_url}))
    (root / "coordinator").mkdir()
    (root / "coordinator" / "record.key").write_bytes(RECORD_KEY)
    (root / "owner").mkdir()
    issued = {"issued_at": 0, "supernode_auth": False, "used_by": None}
    (root / "owner" / "invitations.json").write_text(json.dumps({code_hash("code-1"): issued}))
    federation.owner.set_stake_policy(StakePolicy(ETHER, ETHER // 4, 0, 5, 8))
    return root


def request_of(devnet: Devnet, index: int, code: str, tmp_path: Path) -> tuple[Path, bytes, str]:
    """(request file, share key, address) of dev account ``index`` as a newcomer."""
    account = devnet.accounts[index]
    share = private_key_bytes(generate_private_key())
    request = AdmissionRequest.signed(
        account.private_key,
        federation_id="fed",
        name=f"node-{index}",
        address=account.address,
        share_key="0x" + share_key_hex(share),
        auth_key="",
        code=code,
    )
    path = tmp_path / f"request-{index}.json"
    path.write_text(request.to_json())
    return path, share, account.address


def admit(request: Path, workdir: Path) -> tuple[int, str]:
    result = CliRunner().invoke(lethe, ["admit", str(request), "--workdir", str(workdir)])
    return result.exit_code, result.output


def test_only_an_issued_signed_unused_code_of_a_staked_newcomer_admits(
    tmp_path: Path, devnet: Devnet, federation: Federation, workdir: Path
) -> None:
    unknown, _, stranger = request_of(devnet, 7, "guessed-code", tmp_path)
    code, output = admit(unknown, workdir)
    assert code == 1 and "not one this owner issued" in output
    assert not federation.owner.is_node(stranger)

    good, share, address = request_of(devnet, 6, "code-1", tmp_path)
    signed = AdmissionRequest.from_json(good.read_text())
    forged = tmp_path / "forged.json"
    forged.write_text(dataclasses.replace(signed, address=stranger).to_json())
    code, output = admit(forged, workdir)
    assert code == 1 and "signed by" in output and not federation.owner.is_node(stranger)

    code, output = admit(good, workdir)  # not staked yet
    assert code == 1 and "staked 0 of" in output and not federation.owner.is_node(address)
    federation.owner.with_account(devnet.accounts[6].private_key).stake(ETHER)
    code, output = admit(good, workdir)
    assert code == 0, output
    assert federation.owner.is_node(address)

    sealed = [
        payload
        for _, payload in mailbox.received(
            devnet.rpc_url, address, federation.owner.owner(), federation.deployment.block_number
        )
    ]
    assert len(sealed) == 1
    assert open_record_key(sealed[0], share, signed, federation.owner.owner()) == RECORD_KEY

    reused, _, other = request_of(devnet, 7, "code-1", tmp_path)
    federation.owner.with_account(devnet.accounts[7].private_key).stake(ETHER)
    code, output = admit(reused, workdir)
    assert code == 1 and f"already used by {address}" in output
    assert not federation.owner.is_node(other)
