"""A hospital's node needs only the base install: with every ``dsfed[pipeline]`` package made unimportable,
``dsfed node start --help`` works and a node sets up, trains a round and evaluates over its own store.

(The real check, a fresh venv with only the base requirements running every demo method's round, is in the
issue 15 note; this test keeps the import boundary from creeping back.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from dsfed.data.store import build_client_store
from dsfed.stages.prepare import store_path
from tests.federated.project import tiny_params

PIPELINE_ONLY = ["prefect", "diffusers", "transformers", "dvc", "dvclive", "pandas", "matplotlib", "opacus", "peft", "ray", "fastapi"]

# None in sys.modules is how Python spells "not installed" to both `import` and importlib.util.find_spec
BLOCK = f"import sys\nsys.modules.update(dict.fromkeys({PIPELINE_ONLY!r}))\n"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_a_node_runs_without_the_pipeline_packages(project: Path) -> None:
    params = tiny_params(project, {"fedunet": {"model": "unet", "input_size": 32}})
    store = store_path(project / "artifacts", "a")
    build_client_store(params, "a", store, root=project, progress=False)
    (project / "params.json").write_text(params.model_dump_json())
    code = f"""
        import json
        from pathlib import Path
        import dsfed.federated.flower.client_app
        from dsfed.cli import app
        from dsfed.federated.engines.base import EvaluateTask, FitTask
        from dsfed.federated.engines.node import Node, NodeConfig
        from dsfed.federated.engines.remote import setup_task
        from dsfed.federated.serialize import to_bytes
        import torch
        from dsfed.config import parse_params
        from dsfed.federated.model_factory import model_factory
        raw = json.loads(Path("params.json").read_text())
        node = Node(NodeConfig("a", Path({str(store)!r}), Path("state")))
        reply = node.setup(setup_task("federated", {{"params": raw, "method": "fedunet"}}))
        assert reply.ok, reply.error
        params = parse_params(raw, source="test")
        weights = to_bytes(dict(model_factory(params, params.federated.methods["fedunet"], torch.device("cpu"))().state_dict()))
        fit = node.handle(FitTask(node.setup_key, 1, weights, {{}}, committed=0))
        assert fit.ok, fit.error
        scored = node.handle(EvaluateTask(node.setup_key, fit.payload, "val"))
        assert scored.ok and "dice" in scored.metrics, scored
        print("node ok")
    """
    out = _run(code, project)
    assert out.returncode == 0 and "node ok" in out.stdout, out.stderr[-2000:]
    cli = subprocess.run([sys.executable, "-c", BLOCK + "from dsfed.cli import main; import sys; sys.argv = ['dsfed', 'node', 'start', '--help']; main()"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert cli.returncode == 0 and "--client" in cli.stdout, cli.stderr[-2000:]


def test_the_blocker_blocks() -> None:
    out = _run("import prefect", Path.cwd())
    assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr
