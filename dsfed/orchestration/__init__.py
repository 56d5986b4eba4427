"""Orchestration helpers that need neither torch nor Prefect's Python API: the DVC stage plan (``plan``) and a
local Prefect server for a command (``prefect_server``, which drives the ``prefect`` CLI). The Prefect flows
in ``flows/`` use them; ``dsfed repro`` and ``dsfed ui`` too.
"""
