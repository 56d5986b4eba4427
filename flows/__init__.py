"""Prefect flows, one per pipeline stage; each DVC stage's ``cmd`` runs one of them."""

import logging
import os

# let Prefect's run logs (console and UI) show dsfed's own log lines
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "dsfed")
logging.getLogger("dsfed").setLevel(logging.INFO)
