"""Errors raised by the falsecl data layer.

Every message names the offending file and says how to fix it, so the ``falsecl data check`` command can print
it as is and exit non-zero.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """Bad or inconsistent input data: corrupt file, wrong band count, size mismatch, unknown mask colour."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset root, split folder or expected file does not exist (or a folder holds no images)."""
