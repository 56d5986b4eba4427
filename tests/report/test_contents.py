"""The report's contents list, its provenance rows and plot limits that do not exaggerate small changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dsfed.report.contents import git_commit, provenance_rows, with_contents
from dsfed.report.figures import honest_ylim


def test_contents_link_every_section_once_with_unique_ids() -> None:
    page = "<h1>t</h1><p>intro</p><h2>Accuracy</h2><p>a</p><h2>SAM-Fed &amp; more</h2><h2>Accuracy</h2>"
    out = with_contents(page)
    assert out.index("<nav class='toc'>") < out.index("<h2 id='accuracy'>") and out.startswith("<h1>t</h1><p>intro</p>")
    assert "<h2 id='accuracy-2'>" in out and "<a href='#sam-fed-more'>SAM-Fed &amp; more</a>" in out
    assert with_contents("<p>none</p>") == "<p>none</p>"


def test_provenance_names_the_commit_and_ignores_the_pipeline_outputs(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == {"commit": None, "uncommitted_changes": None}
    (tmp_path / "dvc.lock").write_text("a\n")
    (tmp_path / "code.py").write_text("a\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True)
    (tmp_path / "dvc.lock").write_text("b\n")   # the pipeline rewrote its lock: not a code change
    state = git_commit(tmp_path)
    assert len(state["commit"]) == 40 and state["uncommitted_changes"] is False
    (tmp_path / "code.py").write_text("b\n")
    assert git_commit(tmp_path)["uncommitted_changes"] is True
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    rows = dict(provenance_rows(tmp_path / "params.yaml", tmp_path))
    assert rows["commit"].endswith("(with uncommitted changes)") and len(rows["params.yaml (SHA-256)"]) == 16


def test_score_axes_span_at_least_a_tenth() -> None:
    lo, hi = honest_ylim([0.941, 0.944, 0.945])
    assert hi - lo >= 0.1 and lo <= 0.941 and hi <= 1.0
    assert honest_ylim([0.2, 0.9]) == (0.19, 0.91)
    assert honest_ylim([0.0, 0.001])[0] == 0.0
    assert honest_ylim([120.0, 80.0]) is None and honest_ylim([]) is None
