"""The work directory of a local federation: one layout that `lethe up` writes and that
`lethe audit`, `lethe forget`, `lethe status` and `lethe rounds` read without flags.

```
<workdir>/                    default .lethe/federation (LETHE_WORKDIR, --workdir)
  federation.json             where everything runs now: RPC URL, contract, API URL, nodes
  chain/deployment.json       the contract (chain id, address, deployment block)
  store/                      the content store (models, manifests, certificates)
  coordinator/api.token       the API's bearer token
  coordinator/coordinator.json
  node-<i>/node.sqlite        node i's records (`lethe-node records --db …`)
  logs/                       one log per process
```

``federation.json`` is the one record of where things run. Each `lethe up` rewrites it
(anvil, the SuperLink and the API may come back on other ports), so readers in a work
directory take the chain's endpoint from it, never from the deployment file's
``rpc_url`` (where the contract was deployed, which `lethe up` refreshes only as a
courtesy to tools given the deployment file alone).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKDIR_ENV = "LETHE_WORKDIR"
DEFAULT_WORKDIR = Path(".lethe") / "federation"
DEFAULT_API_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class WorkDir:
    """Paths inside one work directory (nothing is created or read on construction)."""

    root: Path

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> WorkDir:
        """``path``, else ``$LETHE_WORKDIR``, else ``.lethe/federation``."""
        return cls(Path(path or os.environ.get(WORKDIR_ENV) or DEFAULT_WORKDIR))

    @property
    def summary(self) -> Path:
        return self.root / "federation.json"

    @property
    def deployment(self) -> Path:
        return self.root / "chain" / "deployment.json"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def api_token(self) -> Path:
        return self.root / "coordinator" / "api.token"

    def node_db(self, index: int) -> Path:
        return self.root / f"node-{index}" / "node.sqlite"

    def read_summary(self) -> dict[str, Any]:
        """What `lethe up` wrote to ``federation.json`` ({} if there is none or it is bad)."""
        try:
            data = json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @classmethod
    def holding(cls, deployment_file: Path) -> WorkDir | None:
        """The work directory ``deployment_file`` is the deployment of, if it is one."""
        root = deployment_file.parent.parent
        if deployment_file.parent.name != "chain" or not (root / "federation.json").is_file():
            return None
        return cls(root)

    def rpc_url(self) -> str | None:
        """The chain endpoint `lethe up` last recorded here (None if there is none)."""
        url = self.read_summary().get("rpc_url")
        return url if isinstance(url, str) and url else None

    def api_url(self) -> str:
        """The API address `lethe up` recorded here, else the default one."""
        url = self.read_summary().get("api")
        return url if isinstance(url, str) and url else DEFAULT_API_URL
