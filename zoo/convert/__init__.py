"""Readers of the authors' checkpoint formats; each model registers its converter in the registry."""

from zoo.convert.safe_pickle import SkippedObject, load_checkpoint, tensors_only

__all__ = ["SkippedObject", "load_checkpoint", "tensors_only"]
