"""What every settings section shares: strict pydantic models, the error that names the field, path checks.

Each package owns its settings (``dsfed/<package>/settings.py``); :mod:`dsfed.config` assembles them into
:class:`~dsfed.config.Params`. Nothing here imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo

from dsfed.errors import DsfedError

__all__ = ["CLASS_NAME", "CLIENT_NAME", "ConfigError", "Device", "Strict", "known_model", "paths_checked", "resolve_path"]

CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Device = Literal["auto", "cpu", "cuda"]


class ConfigError(DsfedError):
    """``params.yaml`` is invalid; ``problems`` holds one ``field.path: message`` line per error."""

    def __init__(self, problems: list[str], source: str = "params.yaml") -> None:
        self.problems = problems
        self.source = source
        super().__init__("; ".join(problems))


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


def paths_checked(info: ValidationInfo) -> bool:
    """Whether this validation checks that paths exist (``load_params(check_paths=True)``)."""
    return bool(info.context and info.context.get("check_paths"))


def resolve_path(path: Path, info: ValidationInfo) -> Path:
    """``path`` against the params file's folder when relative."""
    root = Path(info.context.get("root", ".")) if info.context else Path(".")
    return path if path.is_absolute() else root / path


def known_model(value: str) -> str:
    """A registered model name (``dsfed.models.names``), else one line listing them."""
    from dsfed.models.names import MODEL_NAMES

    if value not in MODEL_NAMES:
        raise ValueError(f"unknown model {value!r} (known: {', '.join(MODEL_NAMES)})")
    return value
