"""The coordinator's configuration: one JSON file read by the ServerApp and the API alike."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from protocol.errors import LetheError


class ConfigError(LetheError):
    """The coordinator configuration is missing or invalid."""


@dataclass(frozen=True)
class CoordinatorConfig:
    """Chain, store, queue and round parameters of one federation's coordinator.

    ``slices`` initial rounds are run, round k releasing the models trained through
    slice k (so progress shows while SISA training proceeds); later rounds, run after
    forgets, use every slice. ``clip`` bounds every weight for fixed-point sharing.
    """

    federation_id: str
    rpc_url: str
    contract: str
    coordinator_key_file: str
    store: str
    db: str
    api_token_file: str
    slices: int = 4
    min_nodes: int = 2
    clip: float = 8.0
    deployment_block: int = 0
    train_timeout_s: float = 600.0
    stage_timeout_s: float = 30.0
    poll_s: float = 0.05
    forget_batch: int = 32

    def save(self, path: Path) -> None:
        """Write the config (owner-readable only: it names the key files)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.chmod(path, 0o600)

    @classmethod
    def load(cls, path: Path | str) -> CoordinatorConfig:
        """Read and validate a config file."""
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text())
            config = cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read coordinator config {path}: {exc}") from exc
        if config.slices < 1 or config.min_nodes < 2:
            raise ConfigError("need slices ≥ 1 and min_nodes ≥ 2 (one node alone has no secret)")
        return config

    def coordinator_key(self) -> str:
        """The coordinator's Ethereum private key (hex)."""
        return Path(self.coordinator_key_file).read_text().strip()

    def api_token(self) -> str:
        """The bearer token the API accepts."""
        return Path(self.api_token_file).read_text().strip()
