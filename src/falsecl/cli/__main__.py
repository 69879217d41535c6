"""``python -m falsecl.cli <command> ...``: the same as the ``falsecl`` console script."""

from falsecl.cli import entry

entry()
