"""Shared command-line wrapper for flows: the project is checked before any work, every error reaches the
terminal (and the Prefect UI) as one ``error: ...`` line with its traceback in ``<artifacts>/logs/<stage>.log``,
and every run's wall time is recorded (``dsfed.timings``) for the report's efficiency table."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import typer
from prefect.settings import temporary_settings

from dsfed.error_log import debugging, error_lines, log_file, write_traceback
from dsfed.errors import DsfedError
from dsfed.timings import record_stage_time

KEYED_STAGES = {
    "prepare": "clients", "controlnet": "clients", "synthesize": "clients", "quality": "clients",
    "federated": "federated.methods", "samfed_prepare": "samfed.clients", "samfed_public": "samfed.public",
    "samfed_teacher": "samfed.public", "samfed_evaluate": "samfed.public", "samfed_init": "samfed.architectures",
    "samfed": "samfed.variants",
}
"""Flow name -> the params mapping whose keys its stage key must be (``prepare@<client>``...)."""

RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")
WHOLE_PIPELINE_STAGES = ("distill", "evaluate", "report", "pipeline", "redistill")
"""Stages that need what only the whole pipeline needs (a distillation student among the methods)."""


def stage_of(flow: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, str]:
    """(DVC-style stage name, artifacts root) from a flow's positional arguments.

    Flows take ``([key,] params, artifacts, ...)``: a ``foreach`` stage's key (client or method) comes first.
    """
    name = getattr(flow, "name", getattr(flow, "__name__", "flow")).replace("-", "_")
    params_at = _params_at(args)
    if params_at is None:
        return name, "artifacts"
    key = f"@{args[0]}" if params_at == 1 else ""
    artifacts = args[params_at + 1] if len(args) > params_at + 1 else "artifacts"
    return f"{name}{key}", str(artifacts)


def _params_at(args: tuple[Any, ...]) -> int | None:
    return next((i for i, a in enumerate(args) if isinstance(a, str) and a.endswith((".yaml", ".yml"))), None)


def preflight(flow: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Refuse, before any work (and before Prefect starts a server), a params file the pipeline cannot run
    and a stage key it does not declare (``python -m dsfed_pipeline.flows.federated ../../x``).

    Raises:
        ConfigError: the params file's problems, one line each.
        DsfedError: the key names nothing in its section.
    """
    from dsfed.config import check_project

    params_at = _params_at(args)
    if params_at is None:
        return
    cfg = check_project(args[params_at], whole=getattr(flow, "name", "") in WHOLE_PIPELINE_STAGES)
    section = KEYED_STAGES.get(getattr(flow, "name", ""))
    if section is None or params_at != 1:
        return
    mapping: Any = cfg
    for part in section.split("."):
        mapping = getattr(mapping, part)
    if args[0] not in mapping:
        raise DsfedError(f"{args[params_at]}: {section}: no {args[0]!r} (have: {', '.join(mapping) or 'none'})")


class TracebackToLog(logging.Filter):
    """On Prefect's run loggers: a record carrying an exception sends its traceback to ``log`` and keeps one
    line (for the terminal and the Prefect UI alike) that names the file."""

    def __init__(self, log: Path, stage: str) -> None:
        super().__init__()
        self.log, self.stage = log, stage

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            write_traceback(self.log, f"{self.stage}: {record.getMessage()}", exc)
            record.msg, record.args = f"{record.getMessage().splitlines()[0]} (traceback in {self.log})", ()
            record.exc_info, record.exc_text = None, None
        return True


class QuietFailures(logging.Filter):
    """On the terminal's handler: drop Prefect's own failure lines for a run (the wrapper prints the one
    ``error:`` line); the Prefect UI still gets them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(RUN_LOGGERS):
            return True
        message = record.getMessage()
        return record.levelno < logging.ERROR and not message.startswith(("Finished in state Failed", "Finished in state Crashed"))


def divert_tracebacks(log: Path, stage: str) -> None:
    """Install :class:`TracebackToLog` on Prefect's run loggers and :class:`QuietFailures` on the root's handlers."""
    for name in RUN_LOGGERS:
        logging.getLogger(name).addFilter(TracebackToLog(log, stage))
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietFailures())


def _server_wait() -> dict[Any, Any]:
    """A stage run without a server starts Prefect's ephemeral one and waits 20 s for it by default; on a 2-core
    machine busy with another stage that wait ran out (a stage failed as "unexpected" while two demos ran). Two
    minutes, unless the user set ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    return {} if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in os.environ else {PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}


def run_flow(flow: Callable[..., Any], *args: Any) -> Any:
    """Check the project, then call ``flow(*args)``. A user error (:class:`DsfedError`) prints as its own line(s) on
    stderr and exits 2; anything else as one line naming the log file with the traceback, exit 1."""
    stage, artifacts = stage_of(flow, args)
    log = log_file(stage, artifacts)
    try:
        preflight(flow, args)
    except DsfedError as exc:   # nothing ran: nothing is recorded
        for line in error_lines(exc, stage, log):
            print(line, file=sys.stderr)
        raise typer.Exit(2) from None
    t0, ok = time.perf_counter(), False
    try:
        if not debugging():
            divert_tracebacks(log, stage)
        with temporary_settings(_server_wait()):
            result = flow(*args)
        ok = True
        return result
    except Exception as exc:
        if debugging():
            raise
        for line in error_lines(exc, stage, log):
            print(line, file=sys.stderr)
        raise typer.Exit(2 if isinstance(exc, DsfedError) else 1) from None
    finally:
        process_s = time.time() - psutil.Process().create_time()
        try:
            record_stage_time(artifacts, stage, time.perf_counter() - t0, process_s, ok)
        except OSError:
            pass  # timing is informational: never fail a stage over it
