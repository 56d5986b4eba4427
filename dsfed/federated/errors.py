"""Errors of the federated core: a round that cannot finish, a checkpoint that does not fit the run."""

from __future__ import annotations

from dsfed.errors import DsfedError
from dsfed.round_checkpoints import CheckpointError  # one error for every round checkpoint (federated, distill)

__all__ = ["CheckpointError", "FederatedError"]


class FederatedError(DsfedError):
    """A federated run cannot go on: too few clients finished a round, or a client sent unusable weights."""

