"""Shipped pretraining presets: a labelled dataset given on the command line is the whole pool."""

from pathlib import Path

import pytest
import yaml

from falsecl.datamodules import DEFAULT_SSL_ROOTS, SSLDataModule

PRESETS = sorted((Path(__file__).parents[1] / "configs" / "pretrain").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_add_no_folder_when_a_dataset_is_given(preset):
    data = yaml.safe_load(preset.read_text())["data"]
    # `--data.dataset potsdam --data.root X` on a preset must not silently mix the Dubai tiles in.
    assert SSLDataModule(**{**data, "dataset": "potsdam", "root": "x"}).roots == []
    assert not data.get("extra_roots")
    if "dataset" not in data:
        assert SSLDataModule(**data).roots == list(DEFAULT_SSL_ROOTS)  # Dubai stays the default pool
