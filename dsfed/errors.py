"""Errors that reach the user as one clear line."""

from __future__ import annotations


class DsfedError(Exception):
    """A user-facing error: its message is one line that names the file, field or client at fault."""


class SourceError(DsfedError):
    """A client's data source cannot be read as configured (missing file, corrupt image, bad mask...)."""


class StoreError(DsfedError):
    """A client store is missing, stale, or would be overwritten."""


class HeldOutError(DsfedError):
    """Code asked for training or validation data of the held-out (leave-one-domain-out) client."""


class UnlabelledError(DsfedError):
    """Code read masks of a client whose labels are not for training (``clients.<c>.labels``: test_only or none)."""


class TrainingDiverged(DsfedError):
    """A loss or the weights became non-finite (NaN, inf): training stops, naming the client (or stage) and round,
    instead of shipping a broken model. Never a dropped client: the engines stop the run on it."""
