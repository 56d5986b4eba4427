"""The server-side strategy interface (Flower-style): configure each round's fit, aggregate to named weight groups."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from dsfed.federated.protocol import FitResult, Weights

__all__ = ["DEFAULT_GROUP", "Strategy"]

DEFAULT_GROUP = "global"
"""The one weight group of a method whose clients all run the same architecture."""


class Strategy(ABC):
    """How the server turns client updates into the next global weights, per named weight group.

    A weight group is one architecture's global weights (``{"global": ...}`` when every client runs the
    same model; ``{"unet": ..., "tinysam": ...}`` for heterogeneous clients). ``membership`` maps each
    client to its group. The rounds loop calls :meth:`initialize` once on a fresh run (or
    :meth:`load_state_dict` on a resumed one), then per round :meth:`configure_fit`, :meth:`payloads` and
    :meth:`aggregate_groups`. The defaults send every client its group's weights and aggregate each group
    on its own with :meth:`aggregate`, so tensors of different architectures are never averaged together;
    a strategy that shares knowledge across groups overrides :meth:`aggregate_groups`. All weights here are
    the shared keys only. :meth:`state_dict` goes into every checkpoint and must load with
    ``torch.load(weights_only=True)``.
    """

    name: str = "strategy"

    def initialize(self, groups: Mapping[str, Weights]) -> None:
        """Prepare server state for a run starting from ``groups``. Default: nothing."""

    def configure_fit(self, round: int) -> dict[str, Any]:
        """Config sent to every client trained in ``round`` (passed to ``ClientAlgo.train``). Default: ``{}``."""
        return {}

    def payloads(self, round: int, groups: Mapping[str, Weights], membership: Mapping[str, str], clients: Sequence[str]) -> dict[str, Weights]:
        """The weights each of ``clients`` starts ``round`` from. Default: its group's global weights (the same object
        for every member, so it is serialised once)."""
        return {name: groups[membership[name]] for name in clients}

    def aggregate_groups(
        self, round: int, groups: Mapping[str, Weights], results: list[tuple[str, FitResult]], membership: Mapping[str, str]
    ) -> dict[str, Weights]:
        """The next weight groups. Default: each group with results aggregated from its own members only
        (:meth:`aggregate`); a group none of whose members finished keeps its weights."""
        out = dict(groups)
        for group in groups:
            members = [(name, result) for name, result in results if membership[name] == group]
            if members:
                out[group] = self.aggregate(round, groups[group], members, group=group)
        return out

    @abstractmethod
    def aggregate(self, round: int, global_weights: Weights, results: list[tuple[str, FitResult]], group: str = DEFAULT_GROUP) -> Weights:
        """One group's next weights from its current ones and ``(client name, FitResult)`` of its members that finished."""

    def state_dict(self) -> dict[str, Any]:
        """Server state to checkpoint. Default: ``{}`` (stateless)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Default: nothing."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"
