"""Every row of the bad-input table (tests/bad_inputs/cases.py) through its entry point: exit code 2, one
``error:`` line that matches, no traceback, and nothing written in the project."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.bad_inputs.cases import CASES, DELETE, Case

REPO = Path(__file__).resolve().parents[2]
IGNORED = (".prefect", "__pycache__", ".dvc/tmp", "artifacts/logs/", "artifacts/timings.jsonl")   # logs, not outputs


def make_project(root: Path, case: Case) -> Path:
    """A scratch project: the embedded default's params (edited as the row says), the phantom tables and the
    shipped weights (linked)."""
    (root / "data/phantom").mkdir(parents=True)
    for name in ("sites.yaml", "samfed_sites.yaml"):
        shutil.copy(REPO / "data/phantom" / name, root / "data/phantom" / name)
    (root / "data/pretrained").symlink_to(REPO / "data/pretrained")
    if case.text is not None:
        (root / "params.yaml").write_text(case.text)
    else:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        for path, value in case.edits:
            node = params
            for key in path[:-1]:
                node = node[key]
            if value is DELETE:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "artifacts").mkdir()   # as in a checkout: logs go to artifacts/logs
    for name, data in case.files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (links not followed), scratch folders left out."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part in rel for part in IGNORED) or path.is_symlink() or path.is_dir():
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def command(argv: tuple[str, ...]) -> list[str]:
    if argv[0] == "dsfed":
        return [sys.executable, "-m", "dsfed", *argv[1:]]
    if argv[0].startswith("flows."):
        return [sys.executable, "-m", f"dsfed_pipeline.{argv[0]}", *argv[1:]]
    return list(argv)


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DSFED_DEBUG", "PREFECT_API_URL")}
    return {**env, "PREFECT_HOME": str(root / ".prefect"), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_the_table_covers_every_class_with_at_least_40_rows() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {"wrong-result", "accepted-then-broken", "crash", "cli"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_and_writes_nothing(case: Case, tmp_path: Path) -> None:
    root = make_project(tmp_path / "project", case)
    before = snapshot(root)
    done = subprocess.run(command(case.argv), cwd=root, env=environment(root), capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    lines = error_lines(done.stderr)
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    assert len(lines) == 1, output
    assert re.search(case.expect, lines[0]), f"{lines[0]!r} does not match {case.expect!r}"
    assert snapshot(root) == before, "something was written"
    logs = list((root / "artifacts/logs").glob("*.log"))
    assert len(logs) == case.logged and all("Traceback" in log.read_text() for log in logs)   # the traceback went there
