"""The report's reviewer furniture: where it came from (a provenance table) and a table of contents.

Everything here is the same for the same inputs (issue 16): the commit is the checkout's (two clones of one
commit agree), the params hash is over the validated settings, and the date a report was written is on the
timing page beside it, not in it.
"""

from __future__ import annotations

import hashlib
import html
import re
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "provenance_rows", "with_contents"]

# outputs that change while the pipeline runs: not "uncommitted changes" of the code
_OUTPUTS = (":(exclude)dvc.lock", ":(exclude)artifacts")


def git_commit(root: Path) -> dict[str, Any]:
    """``{"commit", "uncommitted_changes"}`` of the git checkout at ``root`` (tracked files other than the
    pipeline's outputs), both None outside a checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *_OUTPUTS], cwd=root,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": None}
    return {"commit": head, "uncommitted_changes": bool(status.strip())}


def provenance_rows(params_file: Path, root: Path) -> list[list[str]]:
    """(what, value) rows: commit, params hash (SHA-256 of ``params_file``'s bytes: the validated settings hold
    absolute paths, which differ between two clones of one commit), code hash, dsfed and torch versions."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from dsfed.provenance import code_hash

    git = git_commit(root)
    commit = git["commit"] or "not a git checkout"
    if git["uncommitted_changes"]:
        commit += " (with uncommitted changes)"
    try:
        dsfed_version = version("dsfed")
    except PackageNotFoundError:
        dsfed_version = "not installed"
    return [["commit", commit], [f"{params_file.name} (SHA-256)", hashlib.sha256(params_file.read_bytes()).hexdigest()[:16] if params_file.is_file() else "not found"],
            ["code hash (dsfed package)", code_hash()], ["dsfed", dsfed_version], ["torch", torch.__version__.split("+")[0]]]


def _slug(title: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", html.unescape(title).lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def with_contents(page: str) -> str:
    """``page`` with an id on every ``<h2>`` and a contents list of them before the first one."""
    taken: set[str] = set()
    entries: list[tuple[str, str]] = []

    def anchor(match: re.Match[str]) -> str:
        slug = _slug(re.sub(r"<[^>]+>", "", match.group(1)), taken)
        entries.append((slug, match.group(1)))
        return f"<h2 id='{slug}'>{match.group(1)}</h2>"

    body = re.sub(r"<h2>(.*?)</h2>", anchor, page)
    if not entries:
        return body
    nav = "<nav class='toc'><b>Contents</b><ol>" + "".join(f"<li><a href='#{s}'>{t}</a></li>" for s, t in entries) + "</ol></nav>"
    first = body.index("<h2 id=")
    return body[:first] + nav + body[first:]
