"""Which ClientApp a node runs for a task: only code installed on the node.

Specifications:
- runs of ``lethe/lethe`` are answered by the node's installed ``node.client_app:app``,
  whatever FAB the submitter sent (the worker is never handed it);
- another app id is refused, unless the operator allowed it with an installed app project
  (``--allow-app PUBLISHER/NAME=DIR``), whose own ClientApp then answers;
- an ``--allow-app`` entry that does not name an app project is refused up front.
"""

import sys
from pathlib import Path

import pytest

import node.client_app
from node.worker import LETHE_APP, AppSpecError, WorkerConfig, parse_app


def test_lethe_runs_the_installed_client_app_and_nothing_else() -> None:
    config = WorkerConfig("127.0.0.1:1")
    assert config.app_for(LETHE_APP) is node.client_app.app
    assert config.app_for("lethe/lethe-evil") is None
    assert config.app_for("someone/else") is None


def test_an_allowed_app_runs_from_its_installed_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path])
    project = tmp_path / "baseline"
    (project / "baseline_pkg").mkdir(parents=True)
    (project / "baseline_pkg" / "__init__.py").write_text("")
    (project / "baseline_pkg" / "client.py").write_text("app = object()\n")
    (project / "pyproject.toml").write_text(
        '[tool.flwr.app.components]\nclientapp = "baseline_pkg.client:app"\n'
    )
    config = WorkerConfig("127.0.0.1:1", extra_apps=(parse_app(f"me/baseline={project}"),))
    loaded = config.app_for("me/baseline")
    assert loaded is sys.modules["baseline_pkg.client"].app
    assert config.app_for(LETHE_APP) is node.client_app.app


@pytest.mark.parametrize("spec", ["me/baseline", "baseline=.", "me/baseline=/nonexistent"])
def test_an_allow_app_entry_must_name_an_installed_project(spec: str) -> None:
    with pytest.raises(AppSpecError):
        parse_app(spec)
