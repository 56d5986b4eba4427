"""The pipeline side of dsfed: Prefect flows (``dsfed_pipeline.flows``, one per DVC stage, plus ``pipeline``,
``redistill`` and the UI) and their tasks (``dsfed_pipeline.tasks``). Installed with the ``dsfed`` package,
so an installed ``dsfed`` has every command it lists; the core library (``dsfed``) never imports it.

Data flows one way: flows -> tasks -> ``dsfed.stages`` -> the algorithm packages.
"""

import os

# A stage run without a server (``python -m dsfed_pipeline.flows.<stage>`` outside ``dsfed repro``) starts
# Prefect's ephemeral server and waits 20 s for it by default; on a 2-core machine busy with another stage that
# wait ran out (seen: a stage failed as "unexpected" while two demos ran). Two minutes, unless the user set it.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
