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


def test_evaluation_fills_nodata_with_the_mean_and_does_not_score_it(tmp_path: Path) -> None:
    import rasterio

    from falsecl.datasets import SEGMENTATION_DATASETS
    from tests.data.fake_layouts import class_map, colour_mask, write_png

    rng = np.random.default_rng(0)
    data = rng.normal(1100, 300, size=(3, 48, 56)).clip(1, 4000).astype(np.uint16)
    valid = np.ones((48, 56), dtype=bool)
    valid[:, :10] = False
    valid[20:30, 25:35] = False
    mean, std = [1000.0, 1100.0, 1200.0], [300.0] * 3
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 2, 5, padding=2))
    predictor = SlidingWindowPredictor(net, window=32, overlap=0.25, mean=mean, std=std)
    labels = class_map(48, 56, 2, 0)
    results = {}
    for nodata in (65535, 0):
        root = tmp_path / f"nd{nodata}"
        (root / "images").mkdir(parents=True)
        stored = data.copy()
        stored[:, ~valid] = nodata
        with rasterio.open(
            root / "images" / "a.tif", "w", driver="GTiff", height=48, width=56, count=3, dtype="uint16", nodata=nodata
        ) as dst:  # fmt: skip
            dst.write(stored)
        write_png(root / "masks" / "a.png", colour_mask(labels, [(0, 255, 0), (128, 128, 128)]))
        (root / "palette.yaml").write_text('field: "#00ff00"\nroad: [128, 128, 128]\n')
        ds = SEGMENTATION_DATASETS["folder"](root, split="all", patch_size=None)
        results[nodata] = confusion_of_samples(predictor, dataset_samples(ds), 2).numpy()
    np.testing.assert_array_equal(results[65535], results[0])
    assert results[0].sum() == valid.sum()  # nodata pixels are not scored
    filled = data.astype(np.float32)
    filled[:, ~valid] = np.array(mean, dtype=np.float32)[:, None]
    pred = predictor.predict_tensor(torch.from_numpy(filled)).argmax(0).numpy()
    reference = np.bincount(labels[valid] * 2 + pred[valid], minlength=4).reshape(2, 2)
    np.testing.assert_array_equal(results[0], reference)
