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
    """flows -> tasks -> dsfed.stages -> the algorithm packages: dsfed never imports flows, tasks or Prefect
    (statically, not just at import time), and no algorithm package imports the stage layer."""
    imports = _imports("dsfed")
    assert len(imports) > 50
    upward = {f: sorted(m for m in names if m.split(".")[0] in ("flows", "tasks", "prefect")) for f, names in imports.items()}
    assert {f: m for f, m in upward.items() if m} == {}
    into_stages = {f: sorted(m for m in names if m.startswith("dsfed.stages"))
                   for f, names in imports.items() if f.split("/")[1] in ALGORITHM_PACKAGES}
    assert {f: m for f, m in into_stages.items() if m} == {}
