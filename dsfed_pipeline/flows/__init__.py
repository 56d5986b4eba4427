"""Prefect flows, one per pipeline stage; each DVC stage's ``cmd`` runs one of them."""

import logging
import os

# let Prefect's run logs (console and UI) show dsfed's own log lines
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "dsfed")
# no telemetry from the temporary server: hospitals run offline, and the failed send logs an ERROR
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
logging.getLogger("dsfed").setLevel(logging.INFO)
