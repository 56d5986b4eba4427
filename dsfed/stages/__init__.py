"""The stage layer: which files each DVC stage reads and writes under ``artifacts/``.

One module per stage (or stage family); the algorithm packages (``data``, ``models``, ``federated``,
``generation``, ``distill``, ``evaluation``...) take arrays, models and paths and never import this
layer. :mod:`dsfed.stages.producers` is the registry of the models the stages produce, which the
``evaluate`` stage and the report discover.
"""
