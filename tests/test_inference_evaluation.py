"""Streamed evaluation (block by block) gives exactly the metrics of whole-image prediction."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from falsecl.inference import SlidingWindowPredictor
from falsecl.inference.evaluation import confusion_of_samples, dataset_samples

DUBAI = Path(__file__).resolve().parent.parent / "data" / "dubai_aerial"


def whole_image_confusion(
    predictor: SlidingWindowPredictor, image: torch.Tensor, mask: torch.Tensor, k: int
) -> np.ndarray:
    """The previous evaluation: whole-image logits in memory, argmax, numpy confusion over every pixel."""
    pred = predictor.predict_tensor(image).argmax(dim=0).numpy().ravel()
    target = mask.numpy().ravel()
    keep = target != 255
    return np.bincount(target[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


@pytest.mark.skipif(not DUBAI.is_dir(), reason="vendored Dubai data not present")
def test_streamed_metrics_equal_whole_image_metrics_on_dubai_test_tiles() -> None:
    from falsecl.datasets import DubaiAerial

    ds = DubaiAerial(DUBAI, split="test", patch_size=None)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 3, padding=1))
    # panels narrower than tile 8 (2149 px) so the panel seams are exercised too
    predictor = SlidingWindowPredictor(
        net, window=256, overlap=0.25, batch_size=8, mean=[120.0] * 3, std=[60.0] * 3, panel_width=1024
    )
    chosen = [0, len(ds.files) - 1]  # one image of tile 3, one of tile 8
    samples = [dataset_samples(ds)[i] for i in chosen]
    streamed = confusion_of_samples(predictor, samples, 5).numpy()
    reference = sum(whole_image_confusion(predictor, ds[i]["image"], ds[i]["mask"], 5) for i in chosen)
    np.testing.assert_array_equal(streamed, reference)
    assert streamed.sum() > 1_000_000


def test_streamed_confusion_equals_whole_image_on_tensors() -> None:
    torch.manual_seed(1)
    net = nn.Conv2d(3, 4, 3, padding=1)
    image, mask = torch.rand(3, 45, 70) * 100, torch.randint(0, 4, (45, 70))
    mask[:5] = 255
    predictor = SlidingWindowPredictor(net, window=16, overlap=0.5, panel_width=23)
    cm = confusion_of_samples(predictor, [{"image": image, "mask": mask}], 4).numpy()
    np.testing.assert_array_equal(cm, whole_image_confusion(predictor, image, mask, 4))
    bad = mask.clone()
    bad[10, 10] = 7
    with pytest.raises(ValueError, match="outside"):
        confusion_of_samples(predictor, [{"image": image, "mask": bad}], 4)
