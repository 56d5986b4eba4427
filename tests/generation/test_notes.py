"""What `dsfed config validate` says about the generic ControlNet's tasks and the backbone's prompts."""

from __future__ import annotations

from pathlib import Path

from dsfed.config import load_params
from dsfed.generation.notes import (
    backbone_prompts,
    controlnet_class_note,
    controlnet_tasks,
    generation_notes,
    prompt_note,
)

REPO = Path(__file__).resolve().parents[2]
TASKS = {"fundus": ["optic_disc", "optic_cup"], "skin": ["lesion"], "polyp": ["polyp"]}


def test_class_note_only_for_class_counts_the_controlnet_never_saw() -> None:
    assert controlnet_class_note(TASKS, ["lesion"], "c.safetensors") is None
    assert controlnet_class_note(TASKS, ["tumour"], "c.safetensors") is None  # one class, other name: same drawing
    assert controlnet_class_note(None, ["a", "b", "c"], "c.safetensors") is None  # nothing recorded
    note = controlnet_class_note(TASKS, ["liver", "kidney", "spleen"], "c.safetensors")
    assert note is not None and note.startswith("backbone.controlnet: c.safetensors learnt fundus ['optic_disc', 'optic_cup']")
    assert "it knows 1 and 2-class masks" in note


def test_prompt_note() -> None:
    known = ["a retinal fundus photograph", "a dermoscopy photograph of a skin lesion"]
    assert prompt_note("A retinal  fundus photograph", known) is None
    assert prompt_note("anything", None) is None
    note = prompt_note("a chest x-ray", known)
    assert note is not None and note.startswith("backbone.prompt: 'a chest x-ray' is not one") and "generic prompt" in note


def test_shipped_weights_record_their_tasks_and_prompts() -> None:
    shipped = REPO / "data/pretrained/embedded"
    assert controlnet_tasks(shipped / "controlnet.safetensors") == TASKS
    assert backbone_prompts(shipped) == ["a retinal fundus photograph", "a dermoscopy photograph of a skin lesion",
                                         "a colonoscopy frame with a polyp"]


def test_the_shipped_demo_and_skin_scenario_have_nothing_to_note() -> None:
    for params in (REPO / "params.yaml", REPO / "scenarios/skin/params.yaml"):
        assert generation_notes(load_params(params, check_paths=False), REPO) == [], params
