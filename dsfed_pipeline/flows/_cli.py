"""Shared command-line wrapper for flows: user errors become one ``error: ...`` line and exit code 2, and
every run's wall time is recorded (``dsfed.timings``) for the report's efficiency table."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
import typer

from dsfed.errors import DsfedError
from dsfed.timings import record_stage_time


def stage_of(flow: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, str]:
    """(DVC-style stage name, artifacts root) from a flow's positional arguments.

    Flows take ``([key,] params, artifacts, ...)``: a ``foreach`` stage's key (client or method) comes first.
    """
    name = getattr(flow, "name", getattr(flow, "__name__", "flow")).replace("-", "_")
    params_at = next((i for i, a in enumerate(args) if isinstance(a, str) and a.endswith((".yaml", ".yml"))), None)
    if params_at is None:
        return name, "artifacts"
    key = f"@{args[0]}" if params_at == 1 else ""
    artifacts = args[params_at + 1] if len(args) > params_at + 1 else "artifacts"
    return f"{name}{key}", str(artifacts)


def run_flow(flow: Callable[..., Any], *args: Any) -> Any:
    """Call ``flow(*args)``; a :class:`DsfedError` prints as one line on stderr and exits with code 2."""
    stage, artifacts = stage_of(flow, args)
    t0, ok = time.perf_counter(), False
    try:
        result = flow(*args)
        ok = True
        return result
    except DsfedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    finally:
        process_s = time.time() - psutil.Process().create_time()
        try:
            record_stage_time(artifacts, stage, time.perf_counter() - t0, process_s, ok)
        except OSError:
            pass  # timing is informational: never fail a stage over it
