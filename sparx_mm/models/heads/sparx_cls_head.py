"""The official SparX classification head, as an mmpretrain head."""
from typing import Tuple

import torch
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from torch import nn


@MODELS.register_module()
class SparXClsHead(ClsHead):
    """GroupNorm (one group) over the last stage's map -> global average pool -> Linear.

    Args:
        num_classes: number of classes.
        in_channels: channels of the last backbone stage.
        init_cfg: defaults to truncated-normal (std 0.02) Linear weights, as the official model.

    Shapes: feats[-1] (B, in_channels, H, W) -> logits (B, num_classes).
    """

    def __init__(self, num_classes: int, in_channels: int,
                 init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02), **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes < 1:
            raise ValueError(f'SparXClsHead: num_classes must be >= 1, got {num_classes}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.norm = nn.GroupNorm(1, in_channels)
        self.fc = nn.Linear(in_channels, num_classes)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.norm(feats[-1]).mean(dim=(2, 3))

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.pre_logits(feats))
