"""What every settings section shares: strict pydantic models, the error that names the field, path checks.

Each package owns its settings (``dsfed/<package>/settings.py``); :mod:`dsfed.config` assembles them into
:class:`~dsfed.config.Params`. Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo

from dsfed.errors import DsfedError

__all__ = ["CLASS_NAME", "CLIENT_NAME", "ConfigError", "Device", "NAME_RULE", "Strict", "known_model", "name_problems",
           "paths_checked", "resolve_path"]

# Every name that becomes a DVC stage key (``prepare@<client>``, ``federated@<method>``, ``samfed@<variant>``...)
# and a folder under artifacts/: DVC reads a '.' in ``clients.<name>`` as a nested key, and '/', '..' or a
# space would leave artifacts/.
CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NAME_RULE = "letters, digits, '_' and '-', starting with a letter or digit (no '.', '/' or spaces; at most 64)"
CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Device = Literal["auto", "cpu", "cuda"]


def name_problems(section: str, names: Iterable[str]) -> list[str]:
    """One ``section: name ... must be ...`` line per name a DVC stage key and a folder cannot take (no section:
    the line without its prefix, for a field validator whose field pydantic names)."""
    prefix = f"{section}: " if section else ""
    return [f"{prefix}name {name!r} must be {NAME_RULE}" for name in names if not CLIENT_NAME.match(str(name))]


class ConfigError(DsfedError):
    """``params.yaml`` is invalid; ``problems`` holds one ``field.path: message`` line per error."""

    def __init__(self, problems: list[str], source: str = "params.yaml") -> None:
        self.problems = problems
        self.source = source
        super().__init__("; ".join(problems))


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment."""

    # allow_inf_nan: an ``lr: .inf`` (or .nan) anywhere trains to NaN; refuse it here
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True, allow_inf_nan=False)


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
