"""The distillation guard: a distilled model ships only when the clients' real validation says it is better.

DSFedMed distils on synthetic data and, in its released code, selects on synthetic data too. When the
synthetic images or the teacher are off (a foundation model that does not know the task), the student
can score better and better on synthetic validation while it gets worse on real images. The guard
compares, on the source clients' own val splits (only metrics cross), every distilled round with the
undistilled model, and keeps the undistilled one unless a distilled round beats it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GuardChoice", "TeacherCheck", "best_round", "choose", "teacher_check"]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else float("-inf")


@dataclass(frozen=True)
class GuardChoice:
    """What the guard kept for one model.

    Attributes:
        source: ``distilled`` or ``undistilled``.
        round: the distilled round shipped (None when the undistilled model is).
        val_dice: the shipped model's mean real val Dice.
        undistilled_val_dice: the undistilled model's.
        best_round: the best distilled round (None when no round was distilled).
        best_val_dice: its real val Dice (NaN when none).
    """

    source: str
    round: int | None
    val_dice: float
    undistilled_val_dice: float
    best_round: int | None
    best_val_dice: float

    @property
    def kept_undistilled(self) -> bool:
        return self.source == "undistilled"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_round(curve: Mapping[int, float]) -> int | None:
    """The round with the highest score (the earliest on ties; NaN counts as the lowest); None when empty."""
    return max(curve, key=lambda r: (_finite(curve[r]), -r)) if curve else None


def choose(undistilled: float, distilled: Mapping[int, float]) -> GuardChoice:
    """The guard's rule: the best distilled round (the earliest on ties) if it beats ``undistilled``
    strictly, else the undistilled model (a tie keeps it: distillation must earn its place).

    Args:
        undistilled: real val Dice of the model before distillation.
        distilled: round -> real val Dice of the distilled candidates (NaN: no client answered).
    """
    best = best_round(distilled)
    best_dice = distilled[best] if best is not None else float("nan")
    if best is not None and _finite(best_dice) > _finite(undistilled):
        return GuardChoice("distilled", best, best_dice, undistilled, best, best_dice)
    return GuardChoice("undistilled", None, undistilled, undistilled, best, best_dice)


@dataclass(frozen=True)
class TeacherCheck:
    """The teacher's strength against its student's on the clients' real validation, before distillation."""

    teacher_val_dice: float
    student_val_dice: float

    @property
    def weaker(self) -> bool:
        """The teacher scores below its student: DSFedMed's premise (a teacher that knows more) fails."""
        return _finite(self.teacher_val_dice) < _finite(self.student_val_dice)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weaker": self.weaker}


def teacher_check(teacher: float, student: float) -> TeacherCheck:
    return TeacherCheck(teacher, student)
