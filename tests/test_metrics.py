import json
import math

import numpy as np
import pytest
import torch

from falsecl.metrics import (
    confusion_matrix_metric,
    format_metrics_table,
    json_ready,
    metrics_from_confusion,
    plot_confusion_matrix,
)


def naive_confusion(pred: np.ndarray, target: np.ndarray, k: int, ignore: int = 255) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel(), strict=True):
        if t == ignore:
            continue
        cm[t, p] += 1
    return cm


def naive_metrics(cm: np.ndarray) -> dict[str, object]:
    k = cm.shape[0]
    ious, f1s = [], []
    for c in range(k):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else float("nan"))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"))
    n = cm.sum()
    po = np.trace(cm) / n
    pe = sum(cm[c, :].sum() * cm[:, c].sum() for c in range(k)) / n**2
    return {"iou": ious, "f1": f1s, "miou": float(np.nanmean(ious)), "oa": po, "kappa": (po - pe) / (1 - pe)}


@pytest.mark.parametrize("seed", [0, 1])
def test_random_predictions_match_naive_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 5
    target = rng.integers(0, k, size=(3, 17, 23))
    target[rng.random(target.shape) < 0.2] = 255  # unlabelled pixels
    pred = rng.integers(0, k, size=target.shape)
    # Make predictions correlated with the target so kappa is far from 0.
    agree = (rng.random(target.shape) < 0.6) & (target != 255)
    pred[agree] = target[agree]
    metric = confusion_matrix_metric(k)
    metric.update(torch.from_numpy(pred[:2]), torch.from_numpy(target[:2]))
    metric.update(torch.from_numpy(pred[2:]), torch.from_numpy(target[2:]))
    cm = metric.compute()
    ref = naive_confusion(pred, target, k)
    np.testing.assert_array_equal(cm.numpy(), ref)
    m = metrics_from_confusion(cm)
    r = naive_metrics(ref)
    assert m["mIoU"] == pytest.approx(r["miou"], abs=1e-12)
    assert m["OA"] == pytest.approx(r["oa"], abs=1e-12)
    assert m["kappa"] == pytest.approx(r["kappa"], abs=1e-12)
    assert m["pixels"] == int((target != 255).sum())
    for c in range(k):
        assert m["per_class"][f"class_{c}"]["IoU"] == pytest.approx(r["iou"][c], abs=1e-12)
        assert m["per_class"][f"class_{c}"]["F1"] == pytest.approx(r["f1"][c], abs=1e-12)


def test_macro_not_micro_iou() -> None:
    # A rare class that is always missed: pooled ("micro") IoU = 90/110 hides it, macro mIoU does not.
    m = metrics_from_confusion(torch.tensor([[90, 10], [10, 0]]))
    assert m["mIoU"] == pytest.approx((90 / 110 + 0.0) / 2)
    assert m["per_class"]["class_1"]["IoU"] == 0.0


def test_logits_as_predictions() -> None:
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    a = confusion_matrix_metric(3)
    a.update(logits, target)
    b = confusion_matrix_metric(3)
    b.update(logits.argmax(1), target)
    assert torch.equal(a.compute(), b.compute())


def test_absent_class_is_nan_and_excluded() -> None:
    # class 2 appears neither in target nor prediction; class 3 only predicted (IoU 0, counts in the mean).
    cm = torch.tensor([[5, 1, 0, 0], [0, 4, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0]])
    m = metrics_from_confusion(cm, ["a", "b", "c", "d"])
    assert math.isnan(m["per_class"]["c"]["IoU"])
    assert math.isnan(m["per_class"]["c"]["F1"])
    assert m["per_class"]["d"]["IoU"] == 0.0
    iou_a, iou_b = 5 / 6, 4 / 7
    assert m["mIoU"] == pytest.approx((iou_a + iou_b + 0.0) / 3)
    text = json.dumps(json_ready(m), allow_nan=False)
    assert '"IoU": null' in text
    assert "n/a" in format_metrics_table(m)


def test_kappa_analytic_values() -> None:
    # perfect agreement -> 1
    assert metrics_from_confusion(torch.tensor([[10, 0], [0, 30]]))["kappa"] == pytest.approx(1.0)
    # chance agreement: independent marginals p_o == p_e -> 0
    assert metrics_from_confusion(torch.tensor([[25, 25], [25, 25]]))["kappa"] == pytest.approx(0.0)
    # textbook example: p_o = 0.7, p_e = 0.5 -> 0.4
    m = metrics_from_confusion(torch.tensor([[20, 5], [10, 15]]))
    assert m["OA"] == pytest.approx(0.7)
    assert m["kappa"] == pytest.approx(0.4)
    # systematic disagreement -> -1
    assert metrics_from_confusion(torch.tensor([[0, 5], [5, 0]]))["kappa"] == pytest.approx(-1.0)
    # one class everywhere: p_e = 1, undefined
    assert math.isnan(metrics_from_confusion(torch.tensor([[7, 0], [0, 0]]))["kappa"])


def test_empty_and_invalid() -> None:
    m = metrics_from_confusion(torch.zeros(3, 3, dtype=torch.long))
    assert math.isnan(m["mIoU"]) and math.isnan(m["OA"]) and m["pixels"] == 0
    with pytest.raises(ValueError, match="must be"):
        metrics_from_confusion(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="class names"):
        metrics_from_confusion(torch.zeros(2, 2), ["x"])
    with pytest.raises(ValueError):
        confusion_matrix_metric(1)


def test_all_ignored_target_counts_nothing() -> None:
    metric = confusion_matrix_metric(3)
    metric.update(torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 255))
    assert int(metric.compute().sum()) == 0


def test_plot_png(tmp_path) -> None:
    path = plot_confusion_matrix(torch.tensor([[3, 1], [0, 0]]), ["x", "y"], tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
