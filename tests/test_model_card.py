"""The model card: merging writes and the card of a fine-tuning run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from falsecl.model_card import MODEL_CARD, read_model_card, update_model_card


def test_update_merges_nested_fields_and_writes_json_types(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = update_model_card(run, {"dataset": "dubai", "test": {"mIoU": 0.5, "OA": float("nan")}})
    assert path == run / MODEL_CARD
    update_model_card(run, {"test": {"kappa": torch.tensor(0.25)}, "mean": torch.tensor([1.0, 2.0])})
    card = json.loads(path.read_text())
    assert card == {"dataset": "dubai", "test": {"mIoU": 0.5, "OA": None, "kappa": 0.25}, "mean": [1.0, 2.0]}
    assert not [p for p in run.iterdir() if p.name != MODEL_CARD]  # no temporary file left behind


def test_update_replaces_non_mapping_values(tmp_path: Path) -> None:
    update_model_card(tmp_path, {"class_names": ["a", "b"], "test": {"mIoU": 0.1}})
    update_model_card(tmp_path, {"class_names": ["c"], "test": None})
    assert read_model_card(tmp_path) == {"class_names": ["c"], "test": None}


def test_read_missing_and_broken_cards(tmp_path: Path) -> None:
    assert read_model_card(tmp_path) == {}
    (tmp_path / MODEL_CARD).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_model_card(tmp_path)
    (tmp_path / MODEL_CARD).write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        update_model_card(tmp_path, {"a": 1})
