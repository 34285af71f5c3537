"""Files every role writes: whole or not at all; secrets and configs owner-only, read with checks.

In ``protocol`` because every layer keeps such files, the contract client included (the
deployment file, ``protocol.ledger.Deployment``), and ``protocol`` is the one layer all
of them may import.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Self


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o600, keep_previous: bool = False
) -> None:
    """Replace ``path`` with ``data`` so that a crash at any moment leaves a whole file.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed
    over ``path`` (a rename is atomic on POSIX), and the folder entry is flushed too. With
    ``keep_previous`` the file being replaced is kept as ``<name>.prev``: a reader that
    finds ``path`` missing (a crash between the two renames) falls back to it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def previous_path(path: Path) -> Path:
    """Where :func:`write_atomic` keeps the version it replaced."""
    return path.with_name(path.name + ".prev")


def write_secret(path: Path, data: bytes) -> None:
    """Write key material with owner-only permissions (parent folders created), atomically."""
    write_atomic(path, data, mode=0o600)


class JsonConfig:
    """A frozen dataclass kept as a JSON file; configs name key files, so owner-only.

    Subclasses set ``ERROR`` (the exception their layer raises) and may override
    ``validate`` to check values after loading.
    """

    ERROR: ClassVar[type[Exception]] = ValueError
    WHAT: ClassVar[str] = "config"
    MODE: ClassVar[int] = 0o600
    """File permissions; a config that names no secret and is read by others may widen them."""
    MISSING_HINT: ClassVar[str] = ""
    """Appended to the error when the file does not exist: how to make it."""

    def save(self, path: Path) -> None:
        """Write the config as indented JSON (atomically, with ``MODE`` permissions)."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), mode=self.MODE)

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read and validate a config; ``ERROR`` says which file and what is wrong."""
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text())
            config = cls(**data)
        except FileNotFoundError as exc:
            hint = f"; {cls.MISSING_HINT}" if cls.MISSING_HINT else ""
            raise cls.ERROR(f"no {cls.WHAT} at {path}{hint}") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise cls.ERROR(f"cannot read {cls.WHAT} {path}: {exc}") from exc
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ERROR`` on values no role could run with (override)."""
