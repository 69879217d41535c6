"""Contrastive losses (pure tensor functions plus thin ``nn.Module`` wrappers)."""

from falsecl.losses.debiased import DebiasedContrastiveLoss, debiased_contrastive_loss, debiased_from_similarities
from falsecl.losses.false import FALSELoss, false_loss, select_official, select_per_anchor
from falsecl.losses.hard_negative import HardNegativeLoss, hard_negative_from_similarities, hard_negative_loss
from falsecl.losses.moco_false import MoCoFALSELoss, moco_false_loss, select_queue_candidates
from falsecl.losses.pairs import queue_similarities, simclr_similarities
from falsecl.losses.queue import KeyQueue

__all__ = [
    "DebiasedContrastiveLoss",
    "FALSELoss",
    "HardNegativeLoss",
    "KeyQueue",
    "MoCoFALSELoss",
    "debiased_contrastive_loss",
    "debiased_from_similarities",
    "false_loss",
    "hard_negative_from_similarities",
    "hard_negative_loss",
    "moco_false_loss",
    "queue_similarities",
    "select_official",
    "select_per_anchor",
    "select_queue_candidates",
    "simclr_similarities",
]
