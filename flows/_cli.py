"""Shared command-line wrapper for flows: user errors become one ``error: ...`` line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

from dsfed.errors import DsfedError


def run_flow(flow: Callable[..., Any], *args: Any) -> Any:
    """Call ``flow(*args)``; a :class:`DsfedError` prints as one line on stderr and exits with code 2."""
    try:
        return flow(*args)
    except DsfedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
