"""``python -m dsfed``: the command line."""

from dsfed.cli import main

main()
