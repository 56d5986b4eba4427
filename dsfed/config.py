"""``params.yaml`` as one pydantic model: :class:`Params` assembles the settings each package owns.

Every section lives with its package (``dsfed/<package>/settings.py``); this module assembles them, checks
what spans sections, and loads the file. Load with :func:`load_params`; every problem comes back as a
:class:`ConfigError` whose lines read ``clients.site_b.source.path: folder does not exist (/abs/path)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError, field_validator, model_validator

from dsfed.data.settings import (
    SOURCE_KINDS,
    AugmentConfig,
    ClientConfig,
    DataConfig,
    PrepareConfig,
    SourceSpec,
)
from dsfed.distill.settings import DistillConfig
from dsfed.evaluation.settings import EvaluateConfig
from dsfed.federated.settings import FederatedConfig, LocalSection, MethodConfig
from dsfed.generation.settings import (
    BackboneConfig,
    ControlNetConfig,
    QualityConfig,
    SynthesizeConfig,
)
from dsfed.samfed.settings import SamFedConfig
from dsfed.server.settings import ServerSamConfig
from dsfed.settings import ConfigError, Strict, name_problems
from dsfed.training.settings import LossConfig

__all__ = [
    "AugmentConfig",
    "BackboneConfig",
    "ConfigError",
    "ControlNetConfig",
    "DataConfig",
    "DistillConfig",
    "EvaluateConfig",
    "FederatedConfig",
    "LocalSection",
    "LossConfig",
    "MethodConfig",
    "Params",
    "PrepareConfig",
    "QualityConfig",
    "RedistillConfig",
    "SamFedConfig",
    "ServerSamConfig",
    "SourceSpec",
    "SynthesizeConfig",
    "check_project",
    "load_params",
    "parse_params",
    "read_yaml",
]


CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/#LW-]+$")


class RedistillConfig(Strict):
    """The ``redistill`` deployment served by ``make ui`` (``dsfed_pipeline/flows/redistill.py``): brings the pipeline up to
    date after a client joins. Not a DVC stage; its runs drive ``dvc repro``.

    ``on_join``: run on every ``dsfed.client.joined`` event (``dsfed clients add`` emits one).
    ``cron``: also run on this schedule (5 fields, e.g. ``"0 2 * * *"``: nightly at 02:00), which picks up
    clients added while no server was running; a run with nothing out of date does nothing. null: none.
    """

    on_join: bool = True
    cron: str | None = None
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = value.split()
        if len(fields) != 5 or not all(CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"{value!r} is not a 5-field cron expression (minute hour day month weekday)")
        return value


class Params(Strict):
    """The whole ``params.yaml``."""

    seed: int = 0
    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    federated: FederatedConfig = FederatedConfig()
    backbone: BackboneConfig = BackboneConfig()
    controlnet: ControlNetConfig = ControlNetConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    quality: QualityConfig = QualityConfig()
    server_sam: ServerSamConfig = ServerSamConfig()
    distill: DistillConfig = DistillConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    redistill: RedistillConfig = RedistillConfig()
    samfed: SamFedConfig = SamFedConfig()   # the SAM-Fed task (its own data, public set and clients)
    clients: dict[str, ClientConfig]

    @field_validator("clients")
    @classmethod
    def _client_names(cls, value: dict[str, ClientConfig]) -> dict[str, ClientConfig]:
        if not value:
            raise ValueError("declare at least one client")
        problems = name_problems("", value)
        if problems:
            raise ValueError("\n".join(problems))
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        problems: list[str] = []
        if self.data.holdout is not None and self.data.holdout not in self.clients:
            problems.append(f"data.holdout: no client named {self.data.holdout!r}")
        known = set(self.data.classes)
        for name, client in self.clients.items():
            mapping = getattr(client.source, "mask_mapping", None)
            if mapping is None:
                continue
            unknown = sorted(mapping.classes() - known)
            if unknown:
                problems.append(
                    f"clients.{name}.source.mask_mapping.values: unknown classes {unknown} "
                    f"(data.classes: {', '.join(self.data.classes)})"
                )
            if mapping.threshold is not None and len(self.data.classes) != 1:
                problems.append(
                    f"clients.{name}.source.mask_mapping.threshold: a threshold gives one class, "
                    f"but data.classes has {len(self.data.classes)}"
                )
        problems += self._partition_problems()
        problems += name_problems("federated.methods", self.federated.methods)
        problems += self._method_problems()
        problems += self._validation_problems()
        for name in self.federated.clients or []:
            if name not in self.clients:
                problems.append(f"federated.clients: no client named {name!r} (have: {', '.join(self.clients)})")
        training = self.federated_training_clients
        if self.federated.methods and self.federated.min_clients > len(training):
            problems.append(
                f"federated.min_clients: {self.federated.min_clients} is more than the {len(training)} training clients"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _method_problems(self) -> list[str]:
        """Options a method's model cannot take."""
        from dsfed.models.names import option_problems

        problems: list[str] = []
        for name, method in self.federated.methods.items():
            problems += [f"federated.methods.{name}.{p}" for p in option_problems(method.model, method.input_size, method.prompt, method.adapter)]
        return problems

    def student_problems(self) -> list[str]:
        """The ``distill`` stage's student must be a federated method (checked for the whole pipeline and the
        distill stage, not for a project that runs some methods only; none at all: a SAM-Fed-only project)."""
        if self.federated.methods and self.distill.student not in self.federated.methods:
            have = ", ".join(self.federated.methods)
            return [f"distill.student: no federated method {self.distill.student!r} (federated.methods: {have})"]
        return []

    def _validation_problems(self) -> list[str]:
        """Training clients whose declared sample count gives no validation sample (model selection needs one)."""
        problems: list[str] = []
        val = self.prepare.split.val
        for name in self.training_clients:
            client = self.clients[name]
            n = getattr(client.source, "n", None)
            if client.labels != "full" or not isinstance(n, int) or client.source.partition is not None:
                continue
            if round(val * n) < 1:
                problems.append(f"clients.{name}: prepare.split.val {val:g} of its {n} samples gives no validation sample "
                                f"(model selection needs at least one: val >= {1 / n:.3g}, or more samples)")
        return problems

    def _partition_problems(self) -> list[str]:
        """Clients that split one dataset must agree on the split and take distinct parts."""
        problems: list[str] = []
        families: dict[str, list[tuple[str, int]]] = {}
        for name, client in self.clients.items():
            part = client.source.partition
            if part is None:
                continue
            base = client.source.model_dump(mode="json", exclude={"partition"})
            key = repr(sorted(base.items())) + repr(sorted(part.family().items()))
            families.setdefault(key, []).append((name, part.index))
        for members in families.values():
            seen: dict[int, str] = {}
            for name, index in members:
                if index in seen:
                    problems.append(
                        f"clients.{name}.source.partition.index: part {index} is already taken by client {seen[index]!r}"
                    )
                seen[index] = name
        return problems

    @property
    def training_clients(self) -> list[str]:
        """Clients whose data may be used for training and model selection (all but the held-out one)."""
        return [name for name in self.clients if name != self.data.holdout]

    @property
    def federation(self) -> list[str]:
        """Clients the federated stages read (``federated.clients``, else every client), in params order."""
        chosen = self.federated.clients
        return [name for name in self.clients if chosen is None or name in chosen]

    @property
    def federated_training_clients(self) -> list[str]:
        """The federation's training clients (all but the held-out one)."""
        return [name for name in self.federation if name != self.data.holdout]


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file (ruamel.yaml's safe loader, which refuses duplicate keys), failing with one
    ``line N: ...`` problem, e.g. ``line 12: duplicate key 'site_b' (first on line 9)``."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read ({exc.strerror})"], source=str(path)) from exc
    try:
        return YAML(typ="safe", pure=True).load(text)
    except DuplicateKeyError as exc:
        key = re.search(r'duplicate key "(.*?)"', str(exc.problem))
        first = f" (first on line {exc.context_mark.line + 1})" if exc.context_mark is not None else ""
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else "?"
        raise ConfigError([f"line {line}: duplicate key {key.group(1) if key else '?'!r}{first}"], source=str(path)) from exc
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError([f"{where}: {exc.problem}"], source=str(path)) from exc


def format_validation_error(exc: ValidationError) -> list[str]:
    """One ``dotted.field.path: message`` line per pydantic error (discriminator tags dropped)."""
    lines: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # a discriminated union adds the tag ('phantom') as a path element: drop it
        if "source" in loc:
            i = loc.index("source")
            if i + 1 < len(loc) and loc[i + 1] in SOURCE_KINDS:
                del loc[i + 1]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if err["type"] == "missing":
            msg = "required key is missing"
        path = ".".join(loc)
        for part in msg.split("\n"):
            lines.append(f"{path}: {part}" if path and not part.startswith(("clients.", "data.", f"{path}.")) else part)
    return lines


def parse_params(raw: Any, root: str | Path = ".", check_paths: bool = False, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping. Relative paths are resolved against ``root``."""
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping"], source=source)
    try:
        return Params.model_validate(raw, context={"root": str(root), "check_paths": check_paths})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source=source) from exc


def load_params(path: str | Path = "params.yaml", check_paths: bool = False) -> Params:
    """Read and validate ``params.yaml``. ``check_paths`` also checks every client's source path exists.

    Raises:
        ConfigError: with one ``field.path: message`` line per problem.
    """
    path = Path(path)
    return parse_params(read_yaml(path), root=path.parent, check_paths=check_paths, source=str(path))


DVC_MAPPINGS = ("public", "clients", "architectures", "variants")
"""``samfed`` keys dvc.yaml's ``foreach`` stages iterate over: without them every DVC command fails."""


def check_project(path: str | Path = "params.yaml", check_paths: bool = False, whole: bool = True) -> Params:
    """What every entry point runs before any work (``dsfed config validate``, ``dsfed repro``, each stage,
    ``dsfed clients add``): :func:`load_params` plus what ``dvc.yaml`` needs of the raw file; ``whole``: also
    what only the whole pipeline needs (a distillation student among the methods).

    Raises:
        ConfigError: one ``field.path: message`` line per problem.
    """
    path = Path(path)
    raw = read_yaml(path)
    cfg = parse_params(raw, root=path.parent, check_paths=check_paths, source=str(path))
    missing = [key for key in DVC_MAPPINGS if key not in (raw.get("samfed") or {})]
    if missing:
        raise ConfigError([f"samfed: needs {', '.join(missing)} for dvc.yaml's SAM-Fed stages (for no SAM-Fed task: "
                           "`samfed: {public: {}, clients: {}, architectures: {}, variants: {}}`)"], source=str(path))
    if whole and cfg.student_problems():
        raise ConfigError(cfg.student_problems(), source=str(path))
    return cfg
