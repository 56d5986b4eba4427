"""Shared fixtures: small params for fast stores, the repository root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsfed.config import Params, parse_params

REPO = Path(__file__).resolve().parents[1]
ModuleTmp = Callable[[str], Path]   # the module_tmp fixture: a name -> a new folder for the module


def phantom_client(site: str, n: int = 12, **extra: Any) -> dict[str, Any]:
    return {"source": {"kind": "phantom", "task": "fundus", "path": "sites.yaml", "site": site, "n": n, **extra}}


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Any:
    """Tests may pin torch to one thread; never let that leak into the next test (floats depend on it)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def module_tmp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleTmp]:
    """``module_tmp(name)`` makes a folder that lives as long as the test module, removed at its end unless one of
    the module's tests failed (kept to look at, as pytest's ``tmp_path_retention_policy = "failed"`` keeps a
    failed test's ``tmp_path``). The module fixtures build whole DVC projects (up to 1 GB each with round
    checkpoints); kept to the end of the session they filled a CI disk."""
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch project root holding a copy of the phantom site table as ``sites.yaml``."""
    shutil.copy(REPO / "data/phantom/sites.yaml", tmp_path / "sites.yaml")
    return tmp_path


def small_params(root: Path, clients: dict[str, Any] | None = None, **data: Any) -> Params:
    raw = {
        "seed": 0,
        "data": {"classes": ["optic_disc", "optic_cup"], "image_size": 48, "mask_size": 24, **data},
        "prepare": {"split": {"val": 0.2, "test": 0.25}},
        "clients": clients or {"a": phantom_client("site_a"), "b": phantom_client("site_b")},
    }
    return parse_params(raw, root=root)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real Prefect server on loopback for the whole session; yields its API URL.

    Stage processes that report to it skip Prefect's temporary per-process server (about 10 s each).
    """
    from dsfed.orchestration.prefect_server import auth_string, start_server, stop_server

    home = tmp_path_factory.mktemp("prefect-server")
    proc, url = start_server(home=home, log=home / "server.log")
    before = os.environ.get("PREFECT_API_AUTH_STRING")
    os.environ["PREFECT_API_AUTH_STRING"] = auth_string(home)   # the server is closed: stage processes inherit it
    yield url
    stop_server(proc)
    if before is None:
        os.environ.pop("PREFECT_API_AUTH_STRING", None)
    else:
        os.environ["PREFECT_API_AUTH_STRING"] = before


def prefect_settings(api: str) -> dict[Any, Any]:
    """``temporary_settings`` for an in-process Prefect client of the session's closed server at ``api``."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    return {PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: os.environ.get("PREFECT_API_AUTH_STRING")}


def dvc_project(root: Path, params: dict[str, Any], api_url: str | None = None, portable: bool = False) -> dict[str, str]:
    """A temporary git + DVC copy of the project (code, dvc.yaml, phantom table) with ``params``.

    Returns the environment to run ``dvc`` in (this interpreter's bin first on PATH, a private
    PREFECT_HOME, and ``PREFECT_API_URL`` when ``api_url`` names a running server). ``params`` is written
    as given: DVC needs every key its stages list to be present.
    """
    import yaml

    for tree in ("dsfed", "dsfed_pipeline"):
        shutil.copytree(REPO / tree, root / tree, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    (root / "data/phantom").mkdir(parents=True)
    shutil.copy(REPO / "data/phantom/sites.yaml", root / "data/phantom/sites.yaml")
    (root / "data/pretrained/embedded").mkdir(parents=True)  # the federated stages depend on the foundation SAM
    shutil.copy(REPO / "data/pretrained/embedded/sam_demo.safetensors", root / "data/pretrained/embedded/sam_demo.safetensors")
    for kept in ("artifacts/ablation", "artifacts/samfed/eval"):  # dependencies of the report stage, kept by a README
        (root / kept).mkdir(parents=True)
        shutil.copy(REPO / kept / "README.md", root / kept / "README.md")
    shutil.copy(REPO / "data/phantom/samfed_sites.yaml", root / "data/phantom/samfed_sites.yaml")
    text = yaml.safe_dump(params, sort_keys=False)
    if portable:   # paths relative to the project, as a user's params.yaml has them: two copies have equal files
        text = text.replace(f"{root.resolve()}/", "").replace(f"{root}/", "")
    (root / "params.yaml").write_text(text)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(root / ".prefect"), "PYTHONDONTWRITEBYTECODE": "1",
           # one commit date: two copies of the same files get the same commit (the report names it)
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+00:00", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+00:00"}
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    for args in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(args, cwd=root, env=env, check=True, capture_output=True)
    return env


def run_ok(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command (``dvc repro`` in a test repo); fail the test with its output unless it exits 0."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stages_run(output: str) -> list[str]:
    """The stages a ``dvc repro`` output says it ran, in order."""
    import re

    return re.findall(r"Running stage '([^']+)'", output)

