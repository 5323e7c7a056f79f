"""Small composable layers shared by the models."""

from zoo.layers.gem import GeM, gem
from zoo.layers.norm import L2Norm, freeze_batchnorm, l2n
from zoo.layers.pos_embed import resample_pos_embed_dinov2
from zoo.layers.sinkhorn import log_sinkhorn
from zoo.layers.split_bn import SplitBatchNorm2d, set_bn_splits

__all__ = ["GeM", "L2Norm", "freeze_batchnorm", "gem", "l2n", "log_sinkhorn", "resample_pos_embed_dinov2",
           "SplitBatchNorm2d", "set_bn_splits"]
