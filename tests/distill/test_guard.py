"""The distillation guard's rule: a distilled round ships only if it beats the undistilled model strictly."""

from __future__ import annotations

import math

from dsfed.distill.guard import choose, teacher_check


def test_a_better_distilled_round_ships_the_earliest_of_equals() -> None:
    kept = choose(0.70, {1: 0.68, 2: 0.74, 3: 0.74, 4: 0.71})
    assert kept.source == "distilled" and kept.round == 2 and kept.val_dice == 0.74 and kept.undistilled_val_dice == 0.70


def test_no_better_round_keeps_the_undistilled_model_and_says_which_was_best() -> None:
    kept = choose(0.80, {1: 0.61, 2: 0.79})
    assert kept.kept_undistilled and kept.round is None and kept.val_dice == 0.80
    assert kept.best_round == 2 and kept.best_val_dice == 0.79


def test_a_tie_keeps_the_undistilled_model() -> None:
    assert choose(0.75, {1: 0.75}).kept_undistilled


def test_rounds_nobody_validated_never_win() -> None:
    assert choose(0.5, {1: math.nan, 2: 0.4}).kept_undistilled
    assert choose(math.nan, {1: math.nan}).kept_undistilled  # nothing known: keep what was there
    assert choose(math.nan, {1: 0.2}).round == 1
    assert choose(0.5, {}).kept_undistilled and choose(0.5, {}).best_round is None


def test_teacher_check() -> None:
    assert teacher_check(0.76, 0.89).weaker and not teacher_check(0.89, 0.76).weaker
    assert not teacher_check(0.8, 0.8).weaker
    assert teacher_check(math.nan, 0.5).weaker
    assert teacher_check(0.5, 0.6).as_dict() == {"teacher_val_dice": 0.5, "student_val_dice": 0.6, "weaker": True}
