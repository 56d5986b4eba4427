"""Errors of the federated core: a round that cannot finish, a checkpoint that does not fit the run."""

from __future__ import annotations

from dsfed.errors import DsfedError

__all__ = ["CheckpointError", "FederatedError"]


class FederatedError(DsfedError):
    """A federated run cannot go on: too few clients finished a round, or a client sent unusable weights."""


class CheckpointError(DsfedError):
    """A rounds checkpoint cannot be resumed: written under another configuration, or unreadable."""
