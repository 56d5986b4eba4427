"""The pipeline flow's retry on a busy DVC repository (``dsfed.orchestration.plan.dvc``): both of DVC 3.67's wordings
of a held lock ("Unable to acquire lock" for the repository's, "is busy" for a stage's paths) raise ``DvcBusy``, the
``OSError`` that the flow's tasks retry (``dsfed_pipeline.tasks.transient_io``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dsfed.orchestration.plan import DvcBusy, dvc
from dsfed_pipeline.tasks import transient_io


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")
    for args in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def test_a_held_repository_lock_is_busy_and_retried(repo: Path) -> None:
    import zc.lockfile

    held = zc.lockfile.LockFile(str(repo / ".dvc/tmp/lock"))   # what another `dvc` process holds while it runs
    try:
        with pytest.raises(DvcBusy, match="another DVC process holds the lock") as info:
            dvc(["repro", "echo"], repo)
    finally:
        held.close()
    assert transient_io(None, None, SimpleNamespace(data=info.value))
    assert dvc(["repro", "echo"], repo).returncode == 0   # free again: it runs


def test_a_stage_path_held_by_another_repro_is_busy(repo: Path) -> None:
    """DVC 3.67's "'out.txt' is busy" (the wording the retry used to miss: it waited for "Unable to acquire lock")."""
    rwlock = repo / ".dvc/tmp/rwlock"
    rwlock.write_text(json.dumps({"write": {str(repo / "out.txt"): {"pid": os.getpid(), "cmd": "dvc repro"}}, "read": {}}))
    with pytest.raises(DvcBusy):
        dvc(["repro", "echo"], repo)
    rwlock.unlink()
    assert dvc(["repro", "echo"], repo).returncode == 0
