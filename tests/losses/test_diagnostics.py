"""FALSE's false-negative diagnostics: how often the accepted candidates really share the anchor's class."""

import math

import torch

from falsecl.losses.diagnostics import false_negative_diagnostics


def _layout(classes, cos_pos=0.95):
    """Unit embeddings per patch: same-class patches close together, views nearly identical."""
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(10, 32, generator=g), dim=1)
    z0 = torch.stack([centres[c] for c in classes]) + 0.05 * torch.randn(len(classes), 32, generator=g)
    z1 = z0 + 0.01 * torch.randn(len(classes), 32, generator=g)
    return z0, z1


def naive_precision(accepted, labels):
    hits = total = 0
    for i in range(accepted.shape[0]):
        for j in range(accepted.shape[1]):
            if accepted[i, j] and labels[i] >= 0 and labels[j] >= 0:
                total += 1
                hits += int(labels[i] == labels[j])
    return hits / total if total else math.nan


def naive_selections(z0, z1, threshold):
    """Per_anchor (closest to the positive's cosine, lowest index on ties) and the gated hardest negative, by loops."""
    z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1).double()
    n2 = z.shape[0]
    sim = (z @ z.T).tolist()
    per_anchor = torch.zeros(n2, n2, dtype=torch.bool)
    hardest = torch.zeros(n2, n2, dtype=torch.bool)
    for i in range(n2):
        p = (i + n2 // 2) % n2
        negatives = [j for j in range(n2) if j not in (i, p)]
        closest = min(negatives, key=lambda j: (abs(sim[i][j] - sim[i][p]), j))
        top = max(negatives, key=lambda j: (sim[i][j], -j))
        if sim[i][p] >= threshold:
            per_anchor[i, closest] = True
            hardest[i, top] = True
    return per_anchor, hardest


def test_matches_a_naive_count_and_references_are_sane():
    classes = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    z0, z1 = _layout(classes.tolist())
    out = false_negative_diagnostics(z0, z1, classes, temperature=0.5, threshold=0.5, seed=0)
    # Every anchor's closest negative is its class twin: per_anchor is exact and acts on every row.
    assert out["per_anchor_precision"] == 1.0 and out["per_anchor_rows"] == 1.0
    assert out["hardest_precision"] == 1.0 and out["hardest_gated_precision"] == 1.0
    # Chance: a random negative of another patch shares the class with probability 2/14 here (1 twin, 2 views).
    assert 0.0 <= out["chance_precision"] <= 0.5
    assert 0.0 < out["official_rows"] <= 1.0 / 16 * 2  # one global pick (two rows at most with ties)
    assert set(out) == {
        "per_anchor_precision", "per_anchor_rows", "official_precision", "official_rows",
        "mutual_precision", "mutual_rows", "chance_precision", "hardest_precision",
        "hardest_gated_precision",
    }


def test_unknown_classes_are_excluded_and_nothing_fired_is_nan():
    classes = torch.tensor([0, 0, -1, -1])
    z0, z1 = _layout([0, 0, 1, 1])
    out = false_negative_diagnostics(z0, z1, classes, temperature=0.5, threshold=0.5, seed=0)
    assert out["per_anchor_precision"] == 1.0  # rows of unknown patches do not count
    none = false_negative_diagnostics(z0, z1, classes, temperature=0.5, threshold=1.01, seed=0)
    assert none["per_anchor_rows"] == 0.0 and math.isnan(none["per_anchor_precision"])
    assert math.isnan(none["hardest_gated_precision"]) and not math.isnan(none["hardest_precision"])
    unknown = false_negative_diagnostics(z0, z1, torch.full((4,), -1), temperature=0.5, threshold=0.5, seed=0)
    assert all(math.isnan(v) for k, v in unknown.items() if k.endswith("precision"))


def test_precision_counts_each_accepted_pair_like_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(12, 16, generator=g)
    # Noisy views: some negatives are more similar than the positive, so per_anchor is not the hardest negative.
    z1 = z0 + 1.0 * torch.randn(12, 16, generator=g)
    classes = torch.randint(0, 3, (12,), generator=g)
    accepted, hardest = naive_selections(z0, z1, 0.2)
    assert (accepted != hardest).any()  # the two selections disagree here, so the test tells them apart
    out = false_negative_diagnostics(z0, z1, classes, temperature=0.5, threshold=0.2, seed=0)
    labels = torch.cat([classes, classes]).tolist()
    ref = naive_precision(accepted, labels)
    assert (math.isnan(ref) and math.isnan(out["per_anchor_precision"])) or out["per_anchor_precision"] == ref
    assert out["hardest_gated_precision"] == naive_precision(hardest, labels)


def test_per_anchor_and_the_gated_hardest_negative_disagree_on_a_built_layout():
    # Patch 0 (class 0): its views at cosine 0.6. Patch 1 (class 1) lies close to patch 0's view 0 (the hardest
    # negative); patch 2 (class 0) at cosine ~0.6 from it (the closest to the positive): per_anchor picks the
    # class twin, the hardest negative the other class.
    def unit(deg):
        r = math.radians(deg)
        return [math.cos(r), math.sin(r), 0.0]

    a = math.degrees(math.acos(0.6))
    z0 = torch.tensor([unit(0), unit(10), [0.6, 0.0, 0.8]])
    z1 = torch.tensor([unit(a), unit(12), [0.6, 0.0, 0.8]])
    classes = torch.tensor([0, 1, 0])
    accepted, hardest = naive_selections(z0, z1, 0.5)
    assert accepted[0].nonzero().flatten().tolist() == [2] and hardest[0].nonzero().flatten().tolist() == [1]
    out = false_negative_diagnostics(z0, z1, classes, temperature=0.5, threshold=0.5, seed=0)
    labels = torch.cat([classes, classes]).tolist()
    assert out["per_anchor_precision"] == naive_precision(accepted, labels)
    assert out["hardest_gated_precision"] == naive_precision(hardest, labels)
    assert out["per_anchor_precision"] > out["hardest_gated_precision"]


def test_simclr_logs_diagnostics_only_with_majority_classes():
    from falsecl.tasks.simclr import SimCLR

    def logged(model, meta):
        # Diagnostics go straight to the loggers (only at the steps that measured them), not into the stats.
        captured: list[dict[str, float]] = []
        model.log_measured_now = captured.append
        _, stats = model.pretrain_loss(v, v + 0.01, meta)
        assert not any(k.startswith("diag_") for k in stats)
        return set().union(*captured)

    model = SimCLR(arch="resnet18", in_channels=3, hidden_dim=16, output_dim=8, threshold=0.0)
    v = torch.randn(4, 3, 32, 32)
    keys = logged(model, {"majority": torch.tensor([0, 0, 1, -1])})
    assert {"train/diag_per_anchor_precision", "train/diag_official_rows", "train/diag_chance_precision"} <= keys
    assert logged(model, {"index": torch.arange(4)}) == set()
    assert logged(model, {"majority": torch.full((4,), -1)}) == set()
    off = SimCLR(arch="resnet18", in_channels=3, hidden_dim=16, output_dim=8, diagnostics_every=0)
    assert logged(off, {"majority": torch.zeros(4).long()}) == set()


def test_mutual_keeps_only_pairs_accepted_from_both_ends():
    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(10, 16, generator=g)
    z1 = z0 + 0.3 * torch.randn(10, 16, generator=g)
    classes = torch.randint(0, 3, (10,), generator=g)
    accepted, _ = naive_selections(z0, z1, 0.0)
    mutual = [[bool(accepted[i, j] and accepted[j, i]) for j in range(20)] for i in range(20)]
    out = false_negative_diagnostics(z0, z1, classes, temperature=0.5, threshold=0.0, seed=0)
    assert out["mutual_rows"] == sum(any(r) for r in mutual) / 20
    ref = naive_precision(torch.tensor(mutual), torch.cat([classes, classes]).tolist())
    assert (math.isnan(ref) and math.isnan(out["mutual_precision"])) or out["mutual_precision"] == ref
