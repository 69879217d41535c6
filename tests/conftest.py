"""Test-wide settings: offline, single-threaded, deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _precision_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # `--precision auto` caches its measurements; tests never read or write the user's cache.
    monkeypatch.setenv("FALSECL_PRECISION_CACHE", str(tmp_path_factory.mktemp("cache") / "precision.json"))
