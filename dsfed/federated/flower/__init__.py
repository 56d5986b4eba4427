"""The Flower engine: dsfed's federated stages across machines (a SuperLink at the server, a SuperNode per
hospital). ``launch`` submits a run from a stage, ``server_app``/``client_app`` are the Flower app's two
sides, ``transport`` carries wire messages over Flower's grid, ``deploy`` holds certificates and command lines."""
