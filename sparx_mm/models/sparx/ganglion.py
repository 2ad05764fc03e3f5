"""The ganglion plan: which layers of a stage aggregate earlier features, and which ones.

SparX splits the layers of a stage into *normal* layers and *ganglion* layers. Two knobs set the plan:

* the stride ``S``: one plus the number of normal layers between two consecutive ganglion layers;
* the window ``M``: how many preceding ganglion layers of the same stage a ganglion layer connects to.

Ganglion layers are placed from the last layer of the stage backwards every ``S`` layers, down to the
``start`` index, so the last layer of a stage is always a ganglion layer (when the stage has any).
A ganglion layer concatenates, in this order:

1. the features produced since the previous ganglion layer ("pending" features, in order of production:
   the stage input first while it is still pending, then the normal layers' outputs);
2. the outputs of the last ``M`` ganglion layers of the stage, oldest first.

With ``cross_stage=True`` the stage input is treated as a ganglion output instead of a pending feature,
so it stays in the window until ``M`` newer ganglion layers push it out.

This reproduces the official SparX code (``dense_step`` = S, ``max_dense_depth`` = M, ``dense_start`` =
start); e.g. SparX-Mamba-T stage 3 (7 layers, S=2, M=3, start 0) has ganglion layers 0, 2, 4, 6 fed by
[input], [out1, out0], [out3, out0, out2] and [out5, out0, out2, out4].

Two connection rules (``rule``) decide what a ganglion layer concatenates:

* ``'sparx'`` (default): the rule above;
* ``'dense'``: the paper's DGC ablation (dense ganglion connections): every ganglion layer takes the stage
  input and the outputs of *all* preceding layers of the stage, normal and ganglion, in order of production
  (input, out0, out1, ...). It takes no window and no ``cross_stage`` (the input is always included).

``require_last=True`` rejects a plan whose last layer would not be a ganglion layer. Since ganglion layers
are placed from the last layer backwards, that happens exactly when ``start >= depth`` (a stage left without
ganglion layers by an out-of-range start, like the official ``dense_start=100``); pass ``start=None`` to ask
for a stage without ganglion layers explicitly.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: The source index that stands for the stage input (the previous stage's downsampled output or the stem's).
STAGE_INPUT = -1
#: Accepted connection rules (see the module docstring).
RULES = ('sparx', 'dense')


@dataclass(frozen=True)
class GanglionPlan:
    """The cross-layer connections of one stage.

    Attributes:
        depth: number of layers in the stage.
        ganglion_layers: indices of the ganglion layers, ascending.
        sources: for each ganglion layer, the features it concatenates, in concatenation order;
            ``STAGE_INPUT`` (-1) is the stage input and ``j >= 0`` the output of layer ``j``.
    """
    depth: int
    ganglion_layers: Tuple[int, ...]
    sources: Dict[int, Tuple[int, ...]]

    def num_inputs(self, layer: int) -> int:
        """How many features (each of the stage width) layer ``layer`` concatenates; 0 for normal layers."""
        return len(self.sources.get(layer, ()))

    def is_ganglion(self, layer: int) -> bool:
        return layer in self.sources

    def last_uses(self) -> Dict[int, int]:
        """For each stored feature, the last layer that reads it (so the feature can be freed after)."""
        last = {}
        for layer in self.ganglion_layers:
            for src in self.sources[layer]:
                last[src] = layer
        return last


def _check_int(name, value, minimum, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f'an int >= {minimum}' + (' or None' if allow_none else '')
        raise ValueError(f'ganglion plan: {name} must be {accepted}, got {value!r}')


def ganglion_plan(depth: int,
                  stride: int = 1,
                  window: Optional[int] = None,
                  start: Optional[int] = 0,
                  cross_stage: bool = False,
                  rule: str = 'sparx',
                  require_last: bool = False) -> GanglionPlan:
    """Compute the ganglion plan of one stage.

    Args:
        depth: number of layers in the stage (>= 1).
        stride: S, the spacing of ganglion layers (>= 1).
        window: M, the number of preceding ganglion layers a ganglion layer connects to (>= 1), or
            None for no limit.
        start: the lowest layer index that may be a ganglion layer (>= 0), or None for a stage without
            ganglion layers. A start >= depth also gives no ganglion layers (an error with require_last).
        cross_stage: keep the stage input in the ganglion window instead of the pending features.
        rule: 'sparx' (pending features + the last M ganglion outputs) or 'dense' (the stage input and
            every preceding layer; needs window=None and cross_stage=False).
        require_last: raise unless the stage's last layer is a ganglion layer (i.e. unless
            ``start < depth``); a ``start`` of None (no ganglion layers asked for) is always accepted.

    Returns:
        GanglionPlan.
    """
    _check_int('depth', depth, 1)
    _check_int('stride (S)', stride, 1)
    _check_int('window (M)', window, 1, allow_none=True)
    _check_int('start', start, 0, allow_none=True)
    if not isinstance(cross_stage, bool):
        raise ValueError(f'ganglion plan: cross_stage must be a bool, got {cross_stage!r}')
    if rule not in RULES:
        raise ValueError(f'ganglion plan: rule must be one of {RULES}, got {rule!r}')
    if rule == 'dense' and (window is not None or cross_stage):
        raise ValueError("ganglion plan: the 'dense' rule connects every ganglion layer to the stage input "
                         f'and all preceding layers; it takes window=None and cross_stage=False, got '
                         f'window={window!r}, cross_stage={cross_stage!r}')
    if start is None:
        return GanglionPlan(depth, (), {})
    if require_last and start >= depth:
        raise ValueError(f'ganglion plan: start={start} leaves a stage of depth {depth} without ganglion '
                         f'layers, so its last layer (index {depth - 1}) is not a ganglion layer; use a start '
                         f'<= {depth - 1}, or start=None for a stage without ganglion layers')

    ganglion_layers = tuple(sorted(range(depth - 1, start - 1, -stride)))
    if rule == 'dense':
        sources = {layer: (STAGE_INPUT, ) + tuple(range(layer)) for layer in ganglion_layers}
        return GanglionPlan(depth, ganglion_layers, sources)
    pending, ganglia = ([], [STAGE_INPUT]) if cross_stage else ([STAGE_INPUT], [])
    sources = {}
    for layer in range(depth):
        if layer in ganglion_layers:
            sources[layer] = tuple(pending + ganglia)
            ganglia.append(layer)
            pending = []
        else:
            pending.append(layer)
        if window is not None:
            ganglia = ganglia[-window:]
    return GanglionPlan(depth, ganglion_layers, sources)
