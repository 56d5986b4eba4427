"""Prefect tasks: read stage inputs, call the dsfed core, write outputs atomically, publish artifacts.

Tasks take and return paths, names and content hashes, never tensors. Retries are for I/O that may pass
(``transient_io``); a bug or a user error fails at once, with its message.
"""

from __future__ import annotations

from typing import Any


def transient_io(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry a run that failed with an ``OSError`` (a busy lock, a file still being
    written), never one that failed with anything else."""
    return isinstance(getattr(state, "data", None), OSError)
