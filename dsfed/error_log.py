"""Errors at the entry points: one line on the terminal, the traceback in a log file the line names.

``dsfed ...``, ``python -m dsfed_pipeline.flows.<stage>`` and ``dvc repro`` (which runs the latter) print a
:class:`~dsfed.errors.DsfedError` as ``error: <message>`` (a :class:`~dsfed.settings.ConfigError`: one line
per problem) and anything else as one ``error: ...`` line that names the log file holding its traceback.
``DSFED_DEBUG=1`` re-raises instead (the traceback on the terminal, for developers).
"""

from __future__ import annotations

import os
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

from dsfed.errors import DsfedError

__all__ = ["debugging", "error_lines", "log_file", "write_traceback"]


def debugging() -> bool:
    """Whether ``DSFED_DEBUG`` asks for tracebacks on the terminal."""
    return os.environ.get("DSFED_DEBUG", "") not in ("", "0")


def log_file(name: str, artifacts: str | os.PathLike[str] = "artifacts") -> Path:
    """``<artifacts>/logs/<name>.log`` when the artifacts folder exists, else the same name in the temp folder."""
    root = Path(artifacts)
    folder = root / "logs" if root.is_dir() else Path(tempfile.gettempdir()) / "dsfed-logs"
    return folder / f"{name.replace('/', '_')}.log"


def write_traceback(log: Path, context: str, exc: BaseException) -> Path:
    """Append ``exc``'s traceback to ``log`` under a timestamped header; returns ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(log, "a") as fh:
        fh.write(f"--- {stamp} {context}\n{''.join(traceback.format_exception(exc))}\n")
    return log


def error_lines(exc: BaseException, context: str, log: Path) -> list[str]:
    """The ``error: ...`` lines for ``exc``: its own lines for a user error, else one line naming ``log``
    (where the traceback is written)."""
    from dsfed.settings import ConfigError

    if isinstance(exc, ConfigError):
        return [f"error: {exc.source}: {problem}" for problem in exc.problems]
    if isinstance(exc, DsfedError):
        return [f"error: {exc}"]
    write_traceback(log, context, exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return [f"error: {context}: {type(exc).__name__}{': ' + first if first else ''} (unexpected; traceback in {log})"]
