"""The committed contract artifacts are what the pinned offline compiler makes of the source."""

import json
from pathlib import Path

import pytest

from coordinator.contract_build import (
    ARTIFACT_FILE,
    BUILD_DIR,
    INPUT_FILE,
    SETTINGS,
    SOLC_VERSION,
    ContractBuildError,
    compile_contract,
    write_artifacts,
)
from protocol.ledger import load_artifact


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh build, written exactly as `lethe build-contract` writes it."""
    out = tmp_path_factory.mktemp("build")
    write_artifacts(out)
    return out


def test_recompiling_gives_byte_identical_artifacts(rebuilt: Path) -> None:
    # On failure: `lethe build-contract`, then commit contracts/build/.
    for name in (ARTIFACT_FILE, INPUT_FILE):
        assert (BUILD_DIR / name).read_bytes() == (rebuilt / name).read_bytes(), name


def test_artifact_pins_compiler_and_settings(rebuilt: Path) -> None:
    artifact = json.loads((rebuilt / ARTIFACT_FILE).read_text())
    assert artifact["compiler"]["version"].startswith(SOLC_VERSION + "+commit.")
    assert artifact["settings"]["evmVersion"] == "cancun"
    assert artifact["settings"]["optimizer"] == {"enabled": True, "runs": 200}
    # The CBOR metadata trailer names the compiler: "solc" 0.8.30 (0x00081e).
    assert artifact["deployedBytecode"].endswith("64736f6c634300081e0033")
    assert artifact["bytecode"].endswith(artifact["deployedBytecode"][-100:])
    assert load_artifact().abi == artifact["abi"]


def test_standard_input_is_self_contained_for_explorer_verification(rebuilt: Path) -> None:
    standard_input = json.loads((rebuilt / INPUT_FILE).read_text())
    source = (BUILD_DIR.parent / "Lethe.sol").read_text(encoding="utf-8")
    assert standard_input["sources"] == {"contracts/Lethe.sol": {"content": source}}
    assert standard_input["settings"] == SETTINGS


def test_abi_has_every_call_event_and_error_the_protocol_uses() -> None:
    abi = load_artifact().abi
    by_type: dict[str, set[str]] = {}
    for item in abi:
        by_type.setdefault(item["type"], set()).add(item.get("name", ""))
    assert {
        "admitCoordinator", "admitNode", "removeNode", "setQuorum", "registerKey",
        "proposeRound", "approveRound", "requestForget", "certifyForget", "completeForget",
        "setStakePolicy", "stake", "requestUnstake", "withdrawStake", "fund", "claimRewards",
        "slash",
    } <= by_type["function"]  # fmt: skip
    assert {
        "NodeAdmitted", "KeyRegistered", "RoundProposed", "RoundApproved", "RoundFinalized",
        "ForgetRequested", "ForgetCertified", "ForgetCompleted", "StakePolicySet", "Staked",
        "UnstakeRequested", "StakeWithdrawn", "RewardsFunded", "RewardClaimed", "ForgetSlashed",
    } <= by_type["event"]  # fmt: skip
    assert {
        "NotOwner", "NotCoordinator", "NotAdmittedNode", "AlreadyApproved",
        "RoundNotFinalized", "UnknownRequest",
    } <= by_type["error"]  # fmt: skip


def test_a_broken_source_fails_the_build_with_the_compiler_message() -> None:
    with pytest.raises(ContractBuildError, match="ParserError"):
        compile_contract("pragma solidity 0.8.30;\ncontract Lethe {")


def test_warnings_fail_the_build() -> None:
    source = "pragma solidity 0.8.30;\ncontract Lethe { function f(uint256 x) external {} }"
    with pytest.raises(ContractBuildError, match="Warning"):
        compile_contract(source)
