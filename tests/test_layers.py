"""Layering: the core library never imports Prefect; the CLI starts without heavy imports."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import dsfed


def test_dsfed_never_imports_prefect() -> None:
    modules = [m.name for m in pkgutil.walk_packages(dsfed.__path__, "dsfed.") if not m.name.endswith("__main__")]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert len(modules) > 10
    assert out.strip() == "[]"


def test_config_validation_does_not_import_torch() -> None:
    code = "import sys; from dsfed.cli import app; from dsfed.config import load_params; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _imports(package_dir: str) -> dict[str, set[str]]:
    """Every module imported anywhere (top level or inside a function) by each file under ``package_dir``."""
    import ast
    from pathlib import Path

    found: dict[str, set[str]] = {}
    root = Path(dsfed.__file__).parent.parent
    for path in sorted((root / package_dir).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(root))] = names
    return found


ALGORITHM_PACKAGES = ("data", "models", "federated", "generation", "distill", "evaluation", "server", "training")


def test_layers_point_one_way() -> None:
    """flows -> tasks -> dsfed.stages -> the algorithm packages: dsfed never imports the pipeline package
    (flows, tasks) or Prefect (statically, not just at import time), and no algorithm package imports the stage layer."""
    imports = _imports("dsfed")
    assert len(imports) > 50
    upward = {f: sorted(m for m in names if m.split(".")[0] in ("dsfed_pipeline", "flows", "tasks", "prefect")) for f, names in imports.items()}
    assert {f: m for f, m in upward.items() if m} == {}
    into_stages = {f: sorted(m for m in names if m.startswith("dsfed.stages"))
                   for f, names in imports.items() if f.split("/")[1] in ALGORITHM_PACKAGES}
    assert {f: m for f, m in into_stages.items() if m} == {}


def test_an_installed_dsfed_lists_only_commands_that_work(tmp_path) -> None:
    """A wheel installed outside the checkout (non-editable): every command `dsfed --help` lists answers
    `--help`, and the pipeline side (the UI, the join event) is importable from the installed package."""
    import re
    from pathlib import Path

    repo = Path(dsfed.__file__).resolve().parent.parent
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(repo)],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), *map(str, wheels.glob("*.whl"))],
                   check=True, capture_output=True)
    env = {"PYTHONPATH": str(site), "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "COLUMNS": "200"}

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stdout[-800:], done.stderr[-800:])
        return done.stdout

    where = run("-c", "import dsfed, dsfed_pipeline.flows.ui, dsfed_pipeline.flows.events; print(dsfed.__file__)")
    assert where.strip().startswith(str(site))  # the installed copy, not the checkout
    listed = re.findall(r"^│ ([a-z][a-z-]+) ", run("-m", "dsfed", "--help"), re.M)
    assert {"ui", "repro", "clients", "config", "report"} <= set(listed)
    for command in listed:
        sub = run("-m", "dsfed", command, "--help")
        for nested in re.findall(r"^│ ([a-z][a-z-]+) ", sub, re.M) if "Commands" in sub else []:
            run("-m", "dsfed", command, nested, "--help")
    run("-m", "dsfed_pipeline.flows.ui", "--help")
    run("-m", "dsfed.orchestration.prefect_server", "--help")
