"""The bad-input rows marked ``dvc`` through a real ``dvc repro`` in a temporary git + DVC project: the
first stage DVC runs refuses the params with the same one line (before any work, no traceback), and no
output or ``dvc.lock`` is written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.bad_inputs.cases import CASES, Case
from tests.bad_inputs.test_cli import error_lines, make_project
from tests.conftest import dvc_project

DVC_CASES = [c for c in CASES if c.dvc]


@pytest.mark.parametrize("case", DVC_CASES, ids=[c.id for c in DVC_CASES])
def test_dvc_repro_stops_at_the_first_stage_with_the_one_line(case: Case, tmp_path: Path) -> None:
    scratch = make_project(tmp_path / "scratch", case)
    root = tmp_path / "project"
    root.mkdir()
    env = dvc_project(root, yaml.safe_load((scratch / "params.yaml").read_text()))
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", case.dvc], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output and "unexpected error" not in output, output
    ours = error_lines(output)
    assert len(ours) == 1 and re.search(case.expect, ours[0]), output
    assert re.search(r"ERROR: failed to reproduce '[^']+': failed to run: .*, exited with 2", output), output
    assert not (root / "dvc.lock").exists(), "dvc.lock was written"
    assert not [p for p in ("clients", "federated", "logs") if (root / "artifacts" / p).exists()], "an output was written"
