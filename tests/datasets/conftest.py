"""Fixtures of the data-layer tests: the fake-layout writers of tests/data/fake_layouts.py."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_fakes() -> ModuleType:
    name = "falsecl_test_fake_layouts"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).parents[1] / "data" / "fake_layouts.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def fakes() -> ModuleType:
    return load_fakes()


@pytest.fixture(autouse=True)
def _close_handles():
    yield
    from falsecl.datasets.io import close_handles

    close_handles()
