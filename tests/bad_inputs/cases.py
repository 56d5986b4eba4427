"""The bad-input table: one row per input a new user could give, the entry point it goes to, and the one line
it must get back (a regex of the ``error: ...`` line on stderr). Nothing may be written by any of them.

``edits`` change a copy of the embedded default ``params.yaml``: ``(path, value)`` with the path as a tuple of
keys (a key may hold a '.'), :data:`DELETE` to remove a key; ``text`` replaces the file with raw text instead.
``argv`` is run in the project: ``dsfed ...`` as ``python -m dsfed ...``, ``flows.X ...`` as
``python -m dsfed_pipeline.flows.X ...``. ``dvc`` rows also run through ``dvc repro`` (tests/bad_inputs/test_dvc.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DELETE = object()
VALIDATE = ("dsfed", "config", "validate")
SITE_A = {"source": {"kind": "phantom", "task": "fundus", "path": "data/phantom/sites.yaml", "site": "site_a", "n": 80, "seed": 1}}


@dataclass(frozen=True)
class Case:
    id: str
    kind: str                      # the class: wrong-result, accepted-then-broken, crash, half-written, cli
    argv: tuple[str, ...]
    expect: str                    # regex the one error line must match (search)
    edits: tuple[tuple[tuple[str, ...], Any], ...] = ()
    text: str | None = None
    dvc: str | None = None         # the stage `dvc repro` runs for this row (None: not a dvc row)
    files: dict[str, bytes] = field(default_factory=dict)   # extra files to write in the project first
    logged: bool = False           # raised inside a Prefect run: the traceback must be in artifacts/logs/<stage>.log


def _m(*path: str) -> tuple[str, ...]:
    return tuple(path)


CASES: list[Case] = [
    # ---- the params file itself -----------------------------------------------------------------------------
    Case("yaml-syntax", "crash", VALIDATE, r"^error: params\.yaml: line \d+: ", text="seed: 0\nclients: {a: [}\n"),
    Case("yaml-duplicate-key", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: line \d+: duplicate key 'seed' \(first on line 1\)$",
         text="seed: 0\nseed: 1\nclients: {}\n"),
    Case("top-level-list", "crash", VALIDATE, r"^error: params\.yaml: top level must be a mapping$", text="- a\n- b\n"),
    Case("unknown-top-key", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: sed: unknown key$", edits=((_m("sed"), 1),)),
    Case("unknown-section-key", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: federated\.round: unknown key$",
         edits=((_m("federated", "round"), 3),)),
    Case("no-clients", "crash", VALIDATE, r"^error: params\.yaml: clients: declare at least one client$",
         edits=((_m("clients"), {}), (_m("data", "holdout"), None))),
    # ---- names DVC and paths cannot take --------------------------------------------------------------------
    Case("client-name-dot", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: clients: name 'site\.e' must be letters, digits",
         edits=((_m("clients", "site.e"), SITE_A),)),
    Case("client-name-space", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: clients: name 'site e' must be",
         edits=((_m("clients", "site e"), SITE_A),)),
    Case("method-name-slash", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: federated\.methods: name '\.\./\.\./x' must be",
         edits=((_m("federated", "methods", "../../x"), {"model": "unet"}),)),
    Case("method-name-space", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: federated\.methods: name 'my unet' must be",
         edits=((_m("federated", "methods", "my unet"), {"model": "unet"}),), dvc="federated@fedunet"),
    Case("samfed-variant-name-dot", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: samfed\.variants: name 'v\.1' must be",
         edits=((_m("samfed", "variants", "v.1"), {"model": "unet"}),)),
    Case("samfed-architecture-name", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: samfed\.architectures: name 'u net' must be",
         edits=((_m("samfed", "architectures", "u net"), {"model": "unet"}),)),
    # ---- numbers that train to NaN or give an untrained model ---------------------------------------------
    Case("lr-inf", "wrong-result", VALIDATE, r"^error: params\.yaml: federated\.local\.lr: Input should be a finite number$",
         edits=((_m("federated", "local", "lr"), float("inf")),), dvc="federated@fedunet"),
    Case("lr-nan", "wrong-result", VALIDATE, r"^error: params\.yaml: federated\.methods\.fedunet\.lr: Input should be a finite number$",
         edits=((_m("federated", "methods", "fedunet", "lr"), float("nan")),)),
    Case("lr-negative", "wrong-result", VALIDATE, r"^error: params\.yaml: distill\.lr_tiny: Input should be greater than 0$",
         edits=((_m("distill", "lr_tiny"), -1e-4),)),
    Case("val-zero", "wrong-result", VALIDATE, r"^error: params\.yaml: prepare\.split\.val: 0 leaves no validation data: every federated method",
         edits=((_m("prepare", "split", "val"), 0),), dvc="prepare@site_a"),
    Case("too-few-samples-for-val", "wrong-result", VALIDATE, r"^error: params\.yaml: clients\.site_b: prepare\.split\.val 0\.15 of its 3 samples",
         edits=((_m("clients", "site_b", "source", "n"), 3),), dvc="prepare@site_b"),
    Case("split-leaves-no-training", "wrong-result", VALIDATE, r"^error: params\.yaml: prepare\.split: val \+ test = 1 leaves nothing to train on$",
         edits=((_m("prepare", "split"), {"val": 0.5, "test": 0.5}),)),
    Case("fraction-zero", "wrong-result", VALIDATE, r"^error: params\.yaml: federated\.fraction: Input should be greater than 0$",
         edits=((_m("federated", "fraction"), 0),)),
    Case("max-foreground-zero", "wrong-result", VALIDATE, r"^error: params\.yaml: prepare\.max_foreground: Input should be greater than 0$",
         edits=((_m("prepare", "max_foreground"), 0),)),
    # ---- references to things that do not exist --------------------------------------------------------------
    Case("holdout-unknown", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: data\.holdout: no client named 'site_z'$",
         edits=((_m("data", "holdout"), "site_z"),)),
    Case("federation-unknown-client", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: federated\.clients: no client named 'site_z'",
         edits=((_m("federated", "clients"), ["site_a", "site_b", "site_z"]),)),
    Case("min-clients-too-many", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: federated\.min_clients: 9 is more than the 3 training clients$",
         edits=((_m("federated", "min_clients"), 9),)),
    Case("unknown-model", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: federated\.methods\.fedunet\.model: unknown model 'unet3d'",
         edits=((_m("federated", "methods", "fedunet", "model"), "unet3d"),)),
    Case("unknown-strategy", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: federated\.methods\.fedunet\.strategy: unknown strategy 'fedsgd'",
         edits=((_m("federated", "methods", "fedunet", "strategy"), "fedsgd"),)),
    Case("unknown-student", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: distill\.student: no federated method 'fedtiny'",
         edits=((_m("distill", "student"), "fedtiny"),)),
    Case("samfed-unknown-architecture", "accepted-then-broken", VALIDATE,
         r"^error: params\.yaml: samfed\.variants\.samfed\.model: no architecture 'tinysam'", edits=((_m("samfed", "variants", "samfed", "model"), "tinysam"),)),
    Case("samfed-mappings-missing", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: samfed: needs public, clients, architectures, variants",
         edits=((_m("samfed"), {}),)),
    Case("sam-checkpoint-null", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: server_sam\.checkpoint: required",
         edits=((_m("server_sam", "checkpoint"), None),)),
    Case("backbone-path-null", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: backbone: kind 'embedded' loads its weights from `path`",
         edits=((_m("backbone", "path"), None),)),
    Case("source-path-missing", "crash", VALIDATE, r"^error: params\.yaml: clients\.site_b\.source\.path: ",
         edits=((_m("clients", "site_b", "source", "path"), "data/phantom/nope.yaml"),)),
    Case("source-kind-unknown", "crash", VALIDATE, r"^error: params\.yaml: clients\.site_b\.source: ",
         edits=((_m("clients", "site_b", "source", "kind"), "dicom"),)),
    Case("class-name-bad", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: data\.classes",
         edits=((_m("data", "classes"), ["optic disc", "optic_cup"]),)),
    Case("cron-bad", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: redistill\.cron: '0 2 \* \*' is not a 5-field cron expression",
         edits=((_m("redistill", "cron"), "0 2 * *"),)),
    Case("samfed-holdout", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: samfed\.data\.holdout: SAM-Fed tests every client",
         edits=((_m("samfed", "data", "holdout"), "derm_1"),)),
    # ---- options a model cannot take ---------------------------------------------------------------------------
    Case("prompt-box-unet", "crash", VALIDATE, r"^error: params\.yaml: federated\.methods\.fedunet\.prompt: unet takes no prompts",
         edits=((_m("federated", "methods", "fedunet", "prompt"), "box"),), dvc="federated@fedunet"),
    Case("adapter-tinysam", "crash", VALIDATE, r"^error: params\.yaml: federated\.methods\.fedtinysam\.adapter: 'msa' needs SAM's ViT image encoder",
         edits=((_m("federated", "methods", "fedtinysam", "adapter"), "msa"),)),
    Case("lite0-input-size", "crash", VALIDATE, r"^error: params\.yaml: federated\.methods\.fedunet_lite0\.input_size: unet_lite0 needs a multiple of 32, got 100$",
         edits=((_m("federated", "methods", "fedunet_lite0", "input_size"), 100),)),
    Case("samfed-architecture-size", "crash", VALIDATE, r"^error: params\.yaml: samfed\.architectures\.lite0\.input_size: unet_lite0 needs a multiple of 32",
         edits=((_m("samfed", "architectures", "lite0", "input_size"), 48),)),
    Case("secagg-centralized", "accepted-then-broken", VALIDATE, r"^error: params\.yaml: federated\.methods\.centralized: secagg: strategy 'centralized'",
         edits=((_m("federated", "methods", "centralized", "secagg"), {}),)),
    # ---- other entry points -------------------------------------------------------------------------------------
    Case("add-client-dot", "accepted-then-broken", ("dsfed", "clients", "add", "site.e", "--like", "site_a"),
         r"^error: params\.yaml: clients: name 'site\.e' must be"),
    Case("add-client-exists", "cli", ("dsfed", "clients", "add", "site_a", "--like", "site_b"), r"^error: clients\.site_a: already in params\.yaml"),
    Case("add-client-missing-path", "cli", ("dsfed", "clients", "add", "site_e", "--source", "{kind: phantom, path: nope.yaml, site: site_a}"),
         r"^error: params\.yaml: clients\.site_e\.source\.path: "),
    Case("remove-holdout", "cli", ("dsfed", "clients", "remove", "site_d"), r"^error: clients\.site_d: it is data\.holdout"),
    Case("flow-method-outside", "accepted-then-broken", ("flows.federated", "../../x"),
         r"^error: params\.yaml: federated\.methods: no '\.\./\.\./x' \(have: "),
    Case("flow-unknown-client", "cli", ("flows.prepare", "site_z"), r"^error: params\.yaml: clients: no 'site_z' \(have: "),
    Case("flow-bad-params", "wrong-result", ("flows.federated", "fedunet"), r"^error: params\.yaml: federated\.local\.lr: Input should be a finite number$",
         edits=((_m("federated", "local", "lr"), float("inf")),)),
    Case("samfed-unknown-variant", "cli", ("flows.samfed", "variant", "nope"), r"^error: params\.yaml: samfed\.variants: no 'nope' \(have: "),
    Case("repro-bad-params", "crash", ("dsfed", "repro"), r"^error: params\.yaml: server_sam\.checkpoint: required",
         edits=((_m("server_sam", "checkpoint"), None),)),
    Case("corrupt-site-table", "crash", ("flows.prepare", "site_a"), r"^error: .*data/phantom/sites\.yaml",
         files={"data/phantom/sites.yaml": b"sites: [unclosed\n"}, logged=True),   # fails inside a Prefect task
    Case("validate-missing-file", "cli", ("dsfed", "config", "validate", "nope.yaml"), r"^error: nope\.yaml: cannot read \(No such file or directory\)$"),
    Case("data-show-unknown", "cli", ("dsfed", "data", "show", "site_z"), r"^error: .*site_z"),
    Case("report-before-run", "cli", ("dsfed", "report"), r"^error: artifacts/report/index\.html: no report yet"),
]
