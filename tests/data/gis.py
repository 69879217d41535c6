"""GDAL's command-line tools for the GIS tests: required, never silently skipped."""

from __future__ import annotations

import shutil

import pytest


def gdal_tool(name: str) -> str:
    """Path of a GDAL command-line tool (``gdalinfo``, ``gdalbuildvrt``); fails the test when it is missing.

    `make test` installs them (Debian package gdal-bin), so the GIS outputs are always checked.
    """
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: run `make test` (it installs gdal-bin) or `apt-get install gdal-bin`")
    return path
