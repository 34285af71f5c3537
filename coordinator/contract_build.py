"""Reproducible offline build of contracts/Lethe.sol with the pinned solc-js, via standard JSON.

No native solc exists on our machines and py-solc-x's installer needs the internet, so
py-solc-x drives ``scripts/solc.js``, which speaks the ``solc --standard-json`` protocol
through the npm ``solc`` package pinned in package.json.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import LetheError
from protocol.hashing import keccak256

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_NAME = "contracts/Lethe.sol"
CONTRACT_NAME = "Lethe"
BUILD_DIR = REPO_ROOT / "contracts" / "build"
ARTIFACT_FILE = "Lethe.json"
INPUT_FILE = "Lethe.input.json"
SOLC_WRAPPER = REPO_ROOT / "scripts" / "solc.js"
SOLC_VERSION = "0.8.30"

# Pinned: any change here changes the bytecode, so the committed artifacts must be rebuilt.
SETTINGS: dict[str, Any] = {
    "evmVersion": "cancun",
    "optimizer": {"enabled": True, "runs": 200},
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]},
    },
}


class ContractBuildError(LetheError):
    """The contract could not be compiled, or the compiler is not the pinned one."""


@dataclass(frozen=True)
class BuildOutput:
    """The two committed files, as the exact text written to disk."""

    artifact: str
    standard_input: str


def render_json(obj: Any) -> str:
    """Serialise ``obj`` the one way the committed artifacts are written (stable diffs)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def standard_input(source: str) -> dict[str, Any]:
    """Return the standard-JSON compiler input: also what a block explorer needs to verify."""
    return {
        "language": "Solidity",
        "sources": {SOURCE_NAME: {"content": source}},
        "settings": SETTINGS,
    }


def _check_toolchain() -> None:
    if shutil.which("node") is None:
        raise ContractBuildError("node is not on PATH; install Node.js 20+ and run `make setup`")
    if not (REPO_ROOT / "node_modules" / "solc" / "package.json").is_file():
        raise ContractBuildError("node_modules/solc is missing; run `make setup` first")
    if not os.access(SOLC_WRAPPER, os.X_OK):
        raise ContractBuildError(f"{SOLC_WRAPPER} is missing or not executable (chmod +x it)")


def compile_contract(source: str | None = None) -> BuildOutput:
    """Compile the contract and return the artifact and standard-JSON input texts.

    Warnings fail the build too: the committed contract compiles clean.
    """
    import solcx
    from solcx.exceptions import SolcError
    from solcx.wrapper import get_solc_version

    _check_toolchain()
    if source is None:
        source = (REPO_ROOT / SOURCE_NAME).read_text(encoding="utf-8")
    compiler_input = standard_input(source)
    try:
        version = str(get_solc_version(SOLC_WRAPPER, with_commit_hash=True))
        output = solcx.compile_standard(compiler_input, solc_binary=SOLC_WRAPPER)
    except (SolcError, OSError) as exc:
        raise ContractBuildError(f"solc-js failed: {exc}") from exc
    if not version.startswith(SOLC_VERSION + "+"):
        raise ContractBuildError(f"solc-js is {version}, expected the pinned {SOLC_VERSION}")
    problems = [e["formattedMessage"] for e in output.get("errors", [])]
    if problems:
        raise ContractBuildError("compiler reported:\n" + "\n".join(problems))
    compiled = output["contracts"][SOURCE_NAME][CONTRACT_NAME]
    settings = {k: v for k, v in SETTINGS.items() if k != "outputSelection"}
    artifact = {
        "contractName": CONTRACT_NAME,
        "sourceName": SOURCE_NAME,
        "sourceKeccak256": "0x" + keccak256(source.encode()).hex(),
        "compiler": {"name": "solc-js", "version": version},
        "settings": settings,
        "abi": compiled["abi"],
        "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
    }
    return BuildOutput(artifact=render_json(artifact), standard_input=render_json(compiler_input))


def write_artifacts(build_dir: Path = BUILD_DIR) -> list[Path]:
    """Recompile and (over)write ``Lethe.json`` and ``Lethe.input.json`` in ``build_dir``."""
    built = compile_contract()
    build_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in ((ARTIFACT_FILE, built.artifact), (INPUT_FILE, built.standard_input)):
        path = build_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
