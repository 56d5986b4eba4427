"""Prefect tasks: read stage inputs, call the dsfed core, write outputs atomically, publish artifacts."""
