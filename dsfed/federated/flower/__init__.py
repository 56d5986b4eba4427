"""The Flower engine: dsfed's federated stages across machines (a SuperLink at the server, a SuperNode per
hospital). ``launch`` submits a run from a stage, ``client_app`` is the Flower app's node side (its server side
runs stage code, so it lives in :mod:`dsfed.stages.flower_server`), ``transport`` carries wire messages over
Flower's grid, ``deploy`` holds certificates and command lines."""
