"""``dsfed clients list/add/remove``: params.yaml edited in place, comments kept, bad input refused whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsfed.cli import app
from dsfed.config import load_params
from tests.conftest import REPO


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "data/phantom", tmp_path / "data/phantom")
    (tmp_path / "data/pretrained").symlink_to(REPO / "data/pretrained")  # path checks cover the released weights
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and output; a user error (raised to ``dsfed``'s main, which prints it) is appended."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output + (str(result.exception) if result.exception else "")


def test_add_like_an_existing_client_keeps_comments(params_file: Path) -> None:
    before = params_file.read_text()
    code, out = invoke("clients", "add", "site_e", "--like", "site_a", "--set", "site=site_e", "--params", str(params_file))
    assert code == 0, out
    assert "added client site_e" in out
    params = load_params(params_file, check_paths=True)
    assert list(params.clients)[-1] == "site_e" and params.clients["site_e"].source.site == "site_e"
    assert params.clients["site_e"].source.view == "roi" and params.clients["site_e"].source.n == 80
    text = params_file.read_text()
    assert text.startswith(before.rstrip("\n"))  # everything before, comments included, unchanged
    assert "  site_e:\n    source: {" in text  # one flow-style line, like the others
    assert "outside the pinned federation" in out and params.federation == ["site_a", "site_b", "site_c", "site_d"]


def test_add_with_federate_joins_the_pinned_federation(params_file: Path) -> None:
    code, out = invoke("clients", "add", "site_e", "--like", "site_a", "--set", "site=site_e", "--federate",
                       "--params", str(params_file))
    assert code == 0, out
    params = load_params(params_file)
    assert params.federated.clients == ["site_a", "site_b", "site_c", "site_d", "site_e"]
    assert params.federated_training_clients == ["site_a", "site_b", "site_c", "site_e"]
    assert "clients: [site_a, site_b, site_c, site_d, site_e]" in params_file.read_text()  # still one line


def test_add_from_yaml_and_list(params_file: Path) -> None:
    source = "{kind: phantom, task: fundus, view: roi, path: data/phantom/sites.yaml, site: site_e, n: 20}"
    code, out = invoke("clients", "add", "mobile", "--source", source, "--params", str(params_file))
    assert code == 0, out
    code, out = invoke("clients", "list", "--params", str(params_file))
    assert code == 0 and "mobile" in out and "site_d" in out and "(held out)" in out


@pytest.mark.parametrize(("args", "message"), [
    (["site_a", "--like", "site_b"], "clients.site_a: already in"),
    (["x", "--source", "{kind: phantom, path: nowhere.yaml, site: site_e}"], "does not exist"),
    (["x", "--source", "{kind: warp}"], "clients.x.source"),
    (["x", "--like", "nobody"], "--like nobody: no such client"),
    (["x"], "exactly one of --source"),
])
def test_bad_additions_leave_the_file_untouched(params_file: Path, args: list[str], message: str) -> None:
    before = params_file.read_bytes()
    code, out = invoke("clients", "add", *args, "--params", str(params_file))
    assert code != 0 and message in out
    assert params_file.read_bytes() == before


def test_remove(params_file: Path) -> None:
    code, out = invoke("clients", "remove", "site_c", "--params", str(params_file))
    assert code == 0, out
    params = load_params(params_file)
    assert "site_c" not in params.clients and params.federated.clients == ["site_a", "site_b", "site_d"]
    code, _ = invoke("clients", "remove", "site_d", "--params", str(params_file))  # the held-out client
    assert code != 0 and "site_d" in load_params(params_file).clients


def test_edit_params_keeps_the_rest_as_written_and_refuses_an_invalid_edit_whole(params_file: Path) -> None:
    from dsfed.clients import edit_params
    from dsfed.config import ConfigError

    before = params_file.read_text()
    params = edit_params(params_file, lambda doc: doc["distill"].__setitem__("rounds", 3))
    after = params_file.read_text()
    assert params.distill.rounds == 3
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()) and len(changed) == 1 and "rounds: 3" in changed[0][1]
    with pytest.raises(ConfigError, match="distill.rounds"):
        edit_params(params_file, lambda doc: doc["distill"].__setitem__("rounds", -1))
    assert params_file.read_text() == after
