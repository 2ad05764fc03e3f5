"""A stage of blocks wired by a ganglion plan, for any token mixer."""
from typing import Callable, List

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .ganglion import STAGE_INPUT, GanglionPlan


class GanglionStage(nn.Module):
    """Runs a stage's blocks, feeding each ganglion layer the concatenation its plan asks for.

    Every block is called as ``block(x, shortcut)``, where ``shortcut`` is None for normal layers and, for
    ganglion layers, the channel concatenation (B, n*C, H, W) of the ``n`` features named by the plan.
    Blocks are built by ``make_block(layer_index, shortcut_channels)`` so that the token mixer stays the
    caller's choice (SS2D in SparX-Mamba, window attention in SparX-Swin).

    Args:
        dim: channel width C of the stage.
        plan: the stage's GanglionPlan.
        make_block: factory ``(layer_index, shortcut_channels) -> nn.Module``; ``shortcut_channels`` is 0
            for normal layers.
        downsample: module applied to the stage output to produce the next stage's input.
        with_cp: run every block under gradient checkpointing while training.
    """

    def __init__(self, dim: int, plan: GanglionPlan, make_block: Callable[[int, int], nn.Module],
                 downsample: nn.Module = None, with_cp: bool = False):
        super().__init__()
        self.plan = plan
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            make_block(j, dim * plan.num_inputs(j)) for j in range(plan.depth))
        self.downsample = downsample if downsample is not None else nn.Identity()
        self._last_use = plan.last_uses()

    def _run_block(self, block: nn.Module, x: torch.Tensor, shortcut):
        if self.with_cp and self.training and x.requires_grad:
            return checkpoint(block, x, shortcut, use_reentrant=False)
        return block(x, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) stage input -> (B, C, H, W) stage output, before downsampling."""
        stored = {STAGE_INPUT: x} if STAGE_INPUT in self._last_use else {}
        for j, block in enumerate(self.blocks):
            shortcut = None
            sources: List[int] = self.plan.sources.get(j)
            if sources:
                shortcut = torch.cat([stored[s] for s in sources], dim=1)
                # Free features nobody reads after this layer.
                for s in sources:
                    if self._last_use[s] == j:
                        del stored[s]
            x = self._run_block(block, x, shortcut)
            if j in self._last_use:
                stored[j] = x
        return x

    def extra_repr(self) -> str:
        return f'ganglion_layers={list(self.plan.ganglion_layers)}'
