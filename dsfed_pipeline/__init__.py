"""The pipeline side of dsfed: Prefect flows (``dsfed_pipeline.flows``, one per DVC stage, plus ``pipeline``,
``redistill`` and the UI) and their tasks (``dsfed_pipeline.tasks``). Installed with the ``dsfed`` package,
so an installed ``dsfed`` has every command it lists; the core library (``dsfed``) never imports it.

Data flows one way: flows -> tasks -> ``dsfed.stages`` -> the algorithm packages.
"""
