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
