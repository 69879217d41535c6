"""LightningModules: self-supervised pretraining methods and segmentation fine-tuning."""
