"""Files that hold secrets or configuration: owner-only, written whole, read with checks."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Self


def write_secret(path: Path, data: bytes) -> None:
    """Write key material with owner-only permissions (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "wb") as out:
        out.write(data)


class JsonConfig:
    """A frozen dataclass kept as a JSON file; configs name key files, so owner-only.

    Subclasses set ``ERROR`` (the exception their layer raises) and may override
    ``validate`` to check values after loading.
    """

    ERROR: ClassVar[type[Exception]] = ValueError
    WHAT: ClassVar[str] = "config"

    def save(self, path: Path) -> None:
        """Write the config as indented JSON, readable only by its owner."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        write_secret(path, (json.dumps(data, indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read and validate a config; ``ERROR`` says which file and what is wrong."""
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text())
            config = cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise cls.ERROR(f"cannot read {cls.WHAT} {path}: {exc}") from exc
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ERROR`` on values no role could run with (override)."""
