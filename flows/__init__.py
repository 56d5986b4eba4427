"""Prefect flows, one per pipeline stage; each DVC stage's ``cmd`` runs one of them."""

import os

# let Prefect's run logs show dsfed's own log lines
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "dsfed")
