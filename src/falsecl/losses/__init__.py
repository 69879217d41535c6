"""Contrastive losses (pure tensor functions plus thin ``nn.Module`` wrappers)."""

from falsecl.losses.false import FALSELoss, false_loss, select_official, select_per_anchor

__all__ = ["FALSELoss", "false_loss", "select_official", "select_per_anchor"]
