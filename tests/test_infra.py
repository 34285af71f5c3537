"""Shared infrastructure: secret and config files stay owner-only and say what is wrong.

Specifications:
- a secret or config file is readable by its owner only, even when it existed before
  with wider permissions;
- a config file that is missing, not JSON or has unknown fields is refused with the
  role's error naming the file.
"""

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from infra.net import free_port, port_free, port_open
from protocol.files import JsonConfig, write_secret


class SampleError(Exception):
    pass


@dataclass(frozen=True)
class SampleConfig(JsonConfig):
    ERROR: ClassVar[type[Exception]] = SampleError
    WHAT: ClassVar[str] = "sample config"

    name: str
    size: int = 1

    def validate(self) -> None:
        if self.size < 1:
            raise SampleError("size must be ≥ 1")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_and_config_files_are_owner_only(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "eth.key"
    key.parent.mkdir()
    key.write_text("old")
    key.chmod(0o644)
    write_secret(key, b"new")
    assert key.read_bytes() == b"new" and _mode(key) == 0o600
    config = tmp_path / "sample.json"
    SampleConfig("a", 3).save(config)
    assert _mode(config) == 0o600
    assert SampleConfig.load(config) == SampleConfig("a", 3)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no sample config at"),
        ("{not json", "Expecting property name"),
        (json.dumps({"name": "a", "colour": "red"}), "colour"),
        (json.dumps({"name": "a", "size": 0}), "size must be ≥ 1"),
    ],
)
def test_bad_config_is_refused_naming_the_file(
    tmp_path: Path, content: str | None, words: str
) -> None:
    path = tmp_path / "sample.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SampleError, match=words) as excinfo:
        SampleConfig.load(path)
    if "size" not in words:
        assert str(path) in str(excinfo.value)


def test_free_port_is_free_and_closed() -> None:
    port = free_port()
    assert port_free(port) and not port_open(port)
