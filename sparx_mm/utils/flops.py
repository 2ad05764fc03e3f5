"""Parameter and FLOP counting for SparX-Mamba models, the way the SparX paper counts them.

The paper's FLOPs (SPEC section 1) are fvcore's count plus the selective scan counted analytically:

* **one multiply-add = 1 flop**;
* counted by the jit-trace analyzer (mmengine's :class:`~mmengine.analysis.FlopAnalyzer`, which follows
  fvcore's per-operator rules): convolutions (``batch * prod(weight shape) * prod(output spatial)``, bias
  not counted), linear / matmul (with broadcasting: output elements x contracted size) / bmm, einsum (two
  operands: the product of all index sizes, exact; so SS2D's per-route x / dt projections count the same
  whether written as grouped 1x1 convs, as in the official code, or as a matmul / einsums), batch_norm (2
  per element in eval mode), group_norm and layer_norm (5 per element with affine), adaptive average
  pooling (1 per input element), nearest / bilinear upsampling (1 / 4 per output element),
  scaled_dot_product_attention (``q kᵀ`` + ``attn v``, e.g. window
  attention of other token mixers);
* **not** counted: elementwise ops (activations, add, mul, exp, softplus), data movement (the cross
  scan / merge, reshapes, concatenations), custom autograd functions without a handle (e.g. mmcv's
  RoIAlign);
* **plus** the selective scan, counted analytically as VMamba does: ``9 * B * L * D * N`` (+ ``B * D * L``
  for the D-skip) with ``D = 4 * d_inner`` (all four routes; ``routes * d_inner`` in general),
  ``N = d_state``, ``L = H * W`` of each SS2D;
* LayerScale (stages 3-4) counted as the official code computes it, a depthwise 1x1 conv (one
  multiply-add per output element; here it is an ``addcmul``, which fvcore would not count), under the
  operator name ``layer_scale``; fvcore's ``conv`` count of the official code equals
  ``conv + layer_scale + einsum`` here;
* **minus** the DMCA channel attention (``scaled_dot_product_attention`` or the explicit ``q @ kᵀ`` and
  ``@ v`` products inside :class:`~sparx_mm.models.sparx.DMCA`): the paper leaves it out; it is reported
  separately (``b * g * g * (Lq + Lv)`` MACs with ``b = 4 * batch``, ``g = C / 4``).

How the scan is counted: while :func:`count_flops` traces the model, a scan backend of the highest
priority (see :func:`sparx_mm.ops.register_scan_backend`) runs the reference scan wrapped in one
``torch.autograd.Function``. The jit trace then records each scan as a single ``prim::PythonOp`` node (its
inner elementwise ops are not traced, so nothing of the scan is counted twice) and a handle for that node
adds the analytic count, under the operator name ``selective_scan``, to the module that ran it. The
backend forced by ``SPARX_SCAN_BACKEND`` (or a faster GPU backend) is suspended meanwhile.
:func:`analytic_scan_flops` gives the same number from the backbone's configuration alone, without tracing.

Typical use::

    from sparx_mm.utils.flops import SparXClassifier, count_flops
    report = count_flops(SparXClassifier('t'), (1, 3, 224, 224))
    print(report.flops)            # 5_247_196_800, the paper's 5.2 G
    print(format_report(report))

Downstream models (mmdet / mmseg / mmpretrain configs) go through :func:`build_model_from_config` and
:func:`count_config_flops`; detectors are traced with a fixed set of proposals (see
:func:`prepare_for_flops`).
"""
import contextlib
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..models.backbones.sparx_mamba import SparXMamba
from ..models.layers import LayerScale, unfolded
from ..models.mixers.ss2d import SCAN_ROUTES, SS2D
from ..models.sparx.dmca import DMCA
from ..ops import register_scan_backend, unregister_scan_backend
from ..ops.cross_selective_scan import IMPL_ENV as CROSS_SCAN_IMPL_ENV
from ..ops.gpu_backends import LAYER_KERNELS_ENV
from ..ops.selective_scan import SCAN_BACKEND_ENV, _selective_scan_reference

__all__ = [
    'SCAN_OP_NAME', 'LAYER_SCALE_OP_NAME', 'ATTENTION_OP_NAMES', 'PAPER_NUMBERS', 'DEFAULT_SHAPES', 'FlopReport',
    'SparXClassifier', 'selective_scan_flops', 'analytic_scan_flops', 'sdpa_flop_jit', 'einsum_flop_jit',
    'matmul_flop_jit',
    'scan_as_single_op', 'count_params', 'count_flops', 'count_classifier_flops', 'build_model_from_config',
    'prepare_for_flops', 'count_config_flops', 'model_family', 'paper_numbers', 'format_report',
]

#: Operator name under which the scan appears in :attr:`FlopReport.by_operator`.
SCAN_OP_NAME = 'selective_scan'
#: Operator name of the LayerScale maps (a depthwise 1x1 conv in the official code).
LAYER_SCALE_OP_NAME = 'layer_scale'
#: Operators that, inside a DMCA module, make up its channel attention (excluded from the headline).
ATTENTION_OP_NAMES = ('scaled_dot_product_attention', 'matmul', 'bmm', 'einsum', 'mm', 'baddbmm')
_FLOP_BACKEND = '_sparx_flop_count'


# --------------------------------------------------------------------------------------------------------
# Analytic counts
# --------------------------------------------------------------------------------------------------------
def selective_scan_flops(batch: int, channels: int, length: int, d_state: int, with_d: bool = True,
                         with_z: bool = False) -> int:
    """VMamba's count of one selective scan (``flops_selective_scan_fn``), in multiply-adds.

    Args:
        batch: B.
        channels: D, the scanned channels (for SS2D all four routes: 4 * d_inner).
        length: L, the sequence length (H * W).
        d_state: N.
        with_d: add ``B * D * L`` for the D-skip (SS2D has it).
        with_z: add ``B * D * L`` for a gating branch (SparX's SS2D has none).
    """
    flops = 9 * batch * length * channels * d_state
    if with_d:
        flops += batch * channels * length
    if with_z:
        flops += batch * channels * length
    return flops


def _stage_sizes(backbone: SparXMamba, height: int, width: int) -> List[Tuple[int, int]]:
    # Stem: stride 4 (two stride-2 convs, each ceil(x / 2)); each later stage halves again (ceil).
    sizes, h, w = [], math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)
    for _ in backbone.layers:
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def analytic_scan_flops(backbone: SparXMamba, image_size: Union[int, Sequence[int]], batch: int = 1) -> int:
    """Selective-scan flops of a backbone for an image, from its configuration alone (no forward pass).

    Every SS2D of stage i scans ``routes * d_inner`` channels (4 routes in SparX) of length ``h_i * w_i``,
    the stage's map size (``ceil(H / 2 ** (i + 2))`` by ``ceil(W / 2 ** (i + 2))``). Stages after the last
    returned one are not run by the backbone and not counted.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    last = max(backbone.out_indices)
    total = 0
    for i, ((h, w), stage) in enumerate(zip(_stage_sizes(backbone, height, width), backbone.layers)):
        if i > last:
            break
        for module in stage.modules():
            if isinstance(module, SS2D):
                routes = getattr(module, 'routes', SCAN_ROUTES)
                total += selective_scan_flops(batch, routes * module.d_inner, h * w, module.d_state)
    return total


# --------------------------------------------------------------------------------------------------------
# jit handles
# --------------------------------------------------------------------------------------------------------
def _shape(value) -> Optional[List[int]]:
    sizes = value.type().sizes() if value.isCompleteTensor() else None
    return list(sizes) if sizes is not None else None


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def sdpa_flop_jit(inputs, outputs) -> Counter:
    """``aten::scaled_dot_product_attention``: ``q kᵀ`` plus ``attn v``, in multiply-adds.

    q (..., Sq, E), k (..., Sk, E), v (..., Sk, Ev) -> ``prod(...) * Sq * Sk * (E + Ev)``; softmax and scale
    are elementwise and not counted (fvcore's rules).
    """
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = _prod(q[:-2])
    return Counter({'scaled_dot_product_attention': batch * q[-2] * k[-2] * (q[-1] + v[-1])})


def _scan_handle(with_d: bool):
    def handle(inputs, outputs) -> Counter:
        u, a = _shape(inputs[0]), _shape(inputs[2])  # u (B, KD, L), A (KD, N)
        batch, channels, length = u
        return Counter({SCAN_OP_NAME: selective_scan_flops(batch, channels, length, a[1], with_d=with_d)})
    return handle


class _SelectiveScanForFlops(torch.autograd.Function):
    """The reference scan as one opaque op (with the D-skip), so that a jit trace records a single node."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        return _selective_scan_reference(u, delta, A, B, C, D, delta_bias, delta_softplus)

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover - only used for counting
        raise RuntimeError('the flop-counting scan backend has no backward')


class _SelectiveScanNoSkipForFlops(torch.autograd.Function):
    """As :class:`_SelectiveScanForFlops`, without the D-skip (D is None)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, delta_bias, delta_softplus):
        return _selective_scan_reference(u, delta, A, B, C, None, delta_bias, delta_softplus)

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover
        raise RuntimeError('the flop-counting scan backend has no backward')


#: jit handles of the scan nodes; the node kind of a traced autograd Function is 'prim::PythonOp.<class>'.
SCAN_HANDLES = {
    f'prim::PythonOp.{_SelectiveScanForFlops.__name__}': _scan_handle(with_d=True),
    f'prim::PythonOp.{_SelectiveScanNoSkipForFlops.__name__}': _scan_handle(with_d=False),
}


def _flop_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    if D is None:
        return _SelectiveScanNoSkipForFlops.apply(u, delta, A, B, C, delta_bias, delta_softplus)
    return _SelectiveScanForFlops.apply(u, delta, A, B, C, D, delta_bias, delta_softplus)


@contextlib.contextmanager
def _count_layer_scales(model: nn.Module, counts: Dict[str, int]) -> Iterator[None]:
    """Forward hooks adding, per LayerScale module name, one multiply-add per output element."""
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, LayerScale):
            def hook(mod, args, output, name=name):
                # Python ints from the shape: under a jit trace numel() may come back as a tensor.
                counts[name] = counts.get(name, 0) + _prod(int(d) for d in output.shape)
            handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def scan_as_single_op() -> Iterator[None]:
    """Within the block, every :func:`sparx_mm.ops.selective_scan` call runs the reference scan as one
    autograd Function (one ``prim::PythonOp`` node of a jit trace, counted by :data:`SCAN_HANDLES`).

    The scan core runs unfused and the layer kernels (GroupNorm, depthwise convs) as their reference torch
    ops, on any device, so that the trace sees the operators the counting rules know (a fused GPU kernel is
    one opaque node); the environment's ``SPARX_SCAN_BACKEND``, ``SPARX_CROSS_SCAN`` and
    ``SPARX_LAYER_KERNELS`` are restored afterwards.
    """
    overrides = {SCAN_BACKEND_ENV: None, CROSS_SCAN_IMPL_ENV: 'unfused', LAYER_KERNELS_ENV: 'reference'}
    saved = {name: os.environ.get(name) for name in overrides}
    for name, value in overrides.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
    register_scan_backend(_FLOP_BACKEND, _flop_scan, priority=2 ** 62, force=True)
    try:
        yield
    finally:
        unregister_scan_backend(_FLOP_BACKEND)
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


# --------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------
class SparXClassifier(nn.Module):
    """The official ImageNet classifier: SparXMamba (last stage, no output norm) + ``classifier`` =
    GroupNorm(1 group) -> AdaptiveAvgPool2d(1) -> Flatten -> Linear (the official module layout, so the
    pooling is counted as fvcore counts it)."""

    def __init__(self, arch='t', num_classes: int = 1000):
        super().__init__()
        self.backbone = SparXMamba(arch, out_indices=(3, ), out_norm=None)
        width = self.backbone.dims[-1]
        self.classifier = nn.Sequential(nn.GroupNorm(1, width), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                        nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x)[-1])


def count_params(model: nn.Module) -> int:
    """Number of parameters (each tensor once; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------------
@dataclass
class FlopReport:
    """Result of :func:`count_flops` (all counts in multiply-adds)."""
    name: str
    input_shape: Tuple[int, ...]
    params: int
    #: the counted operators (headline rule): traced ops, ``layer_scale`` and ``selective_scan``, without the
    #: DMCA attention
    by_operator: Counter
    #: the DMCA attention, per operator (``scaled_dot_product_attention``, or ``matmul`` on the training path)
    dmca_attention_by_op: Counter = field(default_factory=Counter)
    by_module: Dict[str, int] = field(default_factory=dict)  # the model's children, headline rule
    unsupported_ops: Counter = field(default_factory=Counter)  # seen by the trace, not counted
    notes: List[str] = field(default_factory=list)
    backbone_params: Optional[int] = None
    paper: Optional[Tuple[float, float]] = None  # the paper's (params M, FLOPs G), where known

    @property
    def scan(self) -> int:
        """The analytic selective-scan term."""
        return self.by_operator.get(SCAN_OP_NAME, 0)

    @property
    def flops(self) -> int:
        """The paper's number: traced ops + analytic scan, without the DMCA attention."""
        return sum(self.by_operator.values())

    @property
    def dmca_attention(self) -> int:
        """The DMCA channel-attention products, left out of :attr:`flops`."""
        return sum(self.dmca_attention_by_op.values())

    @property
    def flops_with_attention(self) -> int:
        return self.flops + self.dmca_attention

    @property
    def fvcore_flops(self) -> int:
        """What fvcore alone counts on the official code (no scan, no attention)."""
        return self.flops - self.scan


def einsum_flop_jit(inputs, outputs) -> Counter:
    """``aten::einsum`` in multiply-adds: for two operands, the product of the sizes of all the letters
    (exact, and equal to the grouped 1x1 conv it may replace); otherwise mmengine's estimate (numpy's
    optimal path, halved)."""
    from mmengine.analysis.jit_handles import einsum_flop_jit as fallback
    equation = inputs[0].toIValue().replace(' ', '')
    operands = [_shape(v) for v in inputs[1].node().inputs()]
    terms = equation.split('->')[0].split(',')
    if len(operands) == 2 and '.' not in equation and all(s is not None for s in operands) and len(terms) == 2:
        sizes = {}
        for letters, shape in zip(terms, operands):
            sizes.update(zip(letters, shape))
        return Counter({'einsum': _prod(sizes.values())})
    return Counter({'einsum': int(fallback(inputs, outputs))})


def matmul_flop_jit(inputs, outputs) -> Counter:
    """``aten::matmul`` in multiply-adds, with broadcasting: (output elements) x (contracted size). mmengine's
    handle multiplies the first operand's elements by the last size, which drops the batch of a
    (M, K) @ (B, K, N) product (SS2D's x_proj on the map)."""
    first = _shape(inputs[0])
    out = _shape(outputs[0])
    if first is None or out is None:
        from mmengine.analysis.jit_handles import matmul_flop_jit as fallback
        return Counter({'matmul': int(fallback(inputs, outputs))})
    return Counter({'matmul': _prod(out) * first[-1]})


def _in_subtree(name: str, root: str) -> bool:
    return root == '' or name == root or name.startswith(root + '.')


def count_flops(model: nn.Module, inputs: Union[torch.Tensor, Tuple[int, ...], Tuple[torch.Tensor, ...]],
                name: str = '', warnings: bool = False) -> FlopReport:
    """Trace ``model`` once (eval mode, no grad) and count params and flops by the paper's rules.

    Args:
        model: any module whose ``forward`` takes the input tensor(s); see :func:`prepare_for_flops` for
            mmdet / mmseg / mmpretrain models.
        inputs: a tensor, a tuple of tensors, or an input shape (then a seeded random tensor of that
            shape is used).
        name: label of the report.
        warnings: let mmengine warn about unsupported operators and uncalled modules.
    """
    from mmengine.analysis import FlopAnalyzer

    if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(s, int) for s in inputs):
        gen = torch.Generator().manual_seed(0)
        inputs = torch.randn(tuple(inputs), generator=gen)
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs, )
    inputs = tuple(inputs)
    was_training = model.training
    model.eval()
    layer_scales: Dict[str, int] = {}
    try:
        # unfolded(): every BatchNorm runs as itself (counted), not folded into the convolution before it.
        with torch.no_grad(), unfolded(), scan_as_single_op(), _count_layer_scales(model, layer_scales):
            analyzer = FlopAnalyzer(model, inputs)
            analyzer.set_op_handle(**SCAN_HANDLES)
            analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
            analyzer.set_op_handle('aten::einsum', einsum_flop_jit)
            analyzer.set_op_handle('aten::matmul', matmul_flop_jit)
            analyzer.unsupported_ops_warnings(warnings).uncalled_modules_warnings(warnings)
            analyzer.tracer_warnings('all' if warnings else 'none')
            per_module = {k: Counter({op: int(n) for op, n in v.items()})
                          for k, v in analyzer.by_module_and_operator().items()}
            unsupported = Counter(analyzer.unsupported_ops())
    finally:
        model.train(was_training)

    # The DMCA attention: attention-like products traced inside DMCA modules (never nested in each other).
    dmca_names = [analyzer.canonical_module_name(n) for n, m in model.named_modules() if isinstance(m, DMCA)]

    def attention_in(root: str) -> Counter:
        out = Counter()
        for n in dmca_names:
            if _in_subtree(n, root):
                out.update({op: per_module.get(n, Counter()).get(op, 0) for op in ATTENTION_OP_NAMES})
        return out

    def headline_in(root: str) -> Counter:
        counts = per_module.get(root, Counter()).copy()
        counts.subtract(attention_in(root))
        counts[LAYER_SCALE_OP_NAME] += sum(v for k, v in layer_scales.items() if _in_subtree(k, root))
        return Counter({op: n for op, n in counts.items() if n})

    backbone = getattr(model, 'backbone', None)
    by_module = {child: sum(headline_in(analyzer.canonical_module_name(child)).values())
                 for child, _ in model.named_children()}
    return FlopReport(
        name=name or type(model).__name__,
        input_shape=tuple(inputs[0].shape),
        params=count_params(model),
        by_operator=headline_in(''),
        dmca_attention_by_op=Counter({op: n for op, n in attention_in('').items() if n}),
        by_module={k: v for k, v in by_module.items() if v},
        unsupported_ops=unsupported,
        backbone_params=count_params(backbone) if isinstance(backbone, nn.Module) else None,
    )


# --------------------------------------------------------------------------------------------------------
# The paper's numbers (Tables 1, 3, 4; SPEC sections 1 and 5): (params in M, FLOPs in G)
# --------------------------------------------------------------------------------------------------------
PAPER_NUMBERS = {
    'SparXMamba': {
        'classification': {'t': (27.1, 5.2), 's': (47, 9.3), 'b': (84, 15.9)},  # 224x224
        'mask_rcnn': {'t': (47, 279), 's': (67, 361), 'b': (103, 498)},  # 800x1280
        'upernet': {'t': (57, 954), 's': (77, 1039), 'b': (115, 1181)},  # 512x2048
        'semantic_fpn': {'t': (31, 197), 's': (51, 281), 'b': (87, 422)},  # 512x2048
    },
    'SparXSwin': {  # Table 9
        'classification': {'t': (26, 4.7), 'b': (88, 16.2)},
        'mask_rcnn': {'t': (45, 270), 'b': (107, 518)},
        'upernet': {'t': (57, 948), 'b': (118, 1201)},
    },
}
#: Input (H, W) at which the paper reports FLOPs, per default scope of a config.
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1280), 'mmseg': (512, 2048)}


def model_family(model_cfg) -> Optional[str]:
    """'classification', 'mask_rcnn', 'upernet', 'semantic_fpn' or None, from a config's ``model`` dict."""
    kind = model_cfg.get('type', '')
    if kind == 'ImageClassifier':
        return 'classification'
    if kind == 'MaskRCNN':
        return 'mask_rcnn'
    head = (model_cfg.get('decode_head') or {}).get('type')
    return {'UPerHead': 'upernet', 'FPNHead': 'semantic_fpn'}.get(head)


def paper_numbers(model_cfg) -> Optional[Tuple[float, float]]:
    """(params M, FLOPs G) the paper gives for a config's model, or None (unknown backbone / family / arch;
    an arch given as a dict, e.g. an ablation variant, is not looked up)."""
    family = model_family(model_cfg)
    backbone = model_cfg.get('backbone') or {}
    arch = backbone.get('arch', 't')
    if family is None or not isinstance(arch, str):
        return None
    return PAPER_NUMBERS.get(backbone.get('type'), {}).get(family, {}).get(arch.lower())


def count_classifier_flops(arch='t', size: Union[int, Sequence[int]] = 224, num_classes: int = 1000) -> FlopReport:
    """Params and flops of the official ImageNet classifier (:class:`SparXClassifier`) for one image."""
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    report = count_flops(SparXClassifier(arch, num_classes), (1, 3, height, width),
                         name=f'SparX-Mamba-{arch.upper() if isinstance(arch, str) else "custom"} classifier')
    if isinstance(arch, str):
        report.paper = (PAPER_NUMBERS['SparXMamba']['classification'].get(arch.lower())
                        if (height, width) == (224, 224) else None)
    return report


# --------------------------------------------------------------------------------------------------------
# OpenMMLab configs
# --------------------------------------------------------------------------------------------------------
def _strip_backbone_init(cfg_model) -> None:
    backbone = cfg_model.get('backbone')
    if backbone is not None:
        backbone['init_cfg'] = None
    if 'pretrained' in cfg_model:
        cfg_model['pretrained'] = None


def build_model_from_config(config, cfg_options: Optional[dict] = None) -> nn.Module:
    """Build the ``model`` of an mmdet / mmseg / mmpretrain config on CPU, in eval mode, without loading
    weights.

    The config's ``custom_imports`` are imported, its ``default_scope`` (mmdet, mmseg, mmpretrain) picks
    the registry, the backbone's ``init_cfg`` (and a top-level ``pretrained``) is set to None, and SyncBN
    layers are reverted to BatchNorm (they cannot run without a process group).

    Args:
        config: a path or an :class:`mmengine.config.Config`.
        cfg_options: overrides merged into the config (``Config.merge_from_dict``).
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.utils import import_modules_from_strings

    cfg = config if isinstance(config, Config) else Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = cfg.model.copy() if hasattr(cfg.model, 'copy') else dict(cfg.model)
    _strip_backbone_init(model_cfg)
    model = MODELS.build(model_cfg)
    model = revert_sync_batchnorm(model)
    return model.eval()


def _fixed_proposals(num: int, height: int, width: int, device) -> torch.Tensor:
    """``num`` deterministic boxes (x1, y1, x2, y2) inside the image (made with numpy, so a jit trace
    records them as a constant, not as random-number ops)."""
    import numpy as np
    rng = np.random.RandomState(0)
    scale = np.array([width, height], dtype=np.float64)
    centre = rng.rand(num, 2) * scale
    size = (0.05 + 0.45 * rng.rand(num, 2)) * scale
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return torch.from_numpy(boxes.astype(np.float32)).to(device)


def prepare_for_flops(model: nn.Module, num_proposals: int = 1000) -> Tuple[nn.Module, List[str]]:
    """Give an OpenMMLab model a ``forward(inputs)`` that a jit trace can follow; returns (model, notes).

    * two-stage detectors (``rpn_head`` + ``roi_head``, e.g. Mask R-CNN): backbone + neck + RPN head
      forward (conv layers, no NMS) + ``roi_head.forward`` on ``num_proposals`` fixed boxes (bbox head on
      all of them, mask head on the first 100, as mmdet's ``StandardRoIHead.forward`` and mmdet 2.x's
      ``forward_dummy`` do); RoIAlign itself (an mmcv op) is not counted;
    * other detectors and segmentors: ``model._forward(inputs)`` (backbone + neck + head; a segmentor's
      auxiliary head is not run at inference and not counted; no final resize to the input size);
    * classifiers: ``model(inputs, mode='tensor')`` (backbone + neck + head).
    """
    notes = []
    if hasattr(model, 'rpn_head') and hasattr(model, 'roi_head') and getattr(model, 'with_rpn', True):
        from mmengine.structures import InstanceData
        original = model.forward

        def forward(inputs):
            feats = model.extract_feat(inputs)
            rpn_outs = model.rpn_head(feats)
            height, width = inputs.shape[-2:]
            proposals = [InstanceData(bboxes=_fixed_proposals(num_proposals, height, width, inputs.device))
                         for _ in range(inputs.shape[0])]
            return rpn_outs, model.roi_head.forward(feats, proposals)

        model.forward = forward
        model._flops_original_forward = original
        notes.append(f'detector: backbone + neck + RPN head convs + RoI heads on {num_proposals} fixed '
                     f'proposals (bbox head: all {num_proposals}; mask head: first '
                     f'{min(100, num_proposals)}); RoIAlign and NMS not counted')
    elif hasattr(model, '_forward') and (hasattr(model, 'decode_head') or hasattr(model, 'bbox_head')):
        model.forward = lambda inputs: model._forward(inputs)
        parts = 'backbone + neck + head' if getattr(model, 'neck', None) is not None else 'backbone + head'
        if getattr(model, 'with_auxiliary_head', False):
            parts += ' (the auxiliary head, used in training only, is not run)'
        notes.append(parts)
    else:
        original = model.forward
        model.forward = lambda inputs: original(inputs, mode='tensor')
        notes.append("model(inputs, mode='tensor')")
    return model, notes


def count_config_flops(config, shape: Optional[Sequence[int]] = None, num_proposals: int = 1000,
                       cfg_options: Optional[dict] = None, name: str = '') -> FlopReport:
    """Params and flops of a config's model for one image of ``shape`` = (H, W) (3 channels, batch 1).

    ``shape`` defaults to the paper's size for the config's ``default_scope`` (:data:`DEFAULT_SHAPES`):
    224x224 (mmpretrain), 800x1280 (mmdet), 512x2048 (mmseg). The report's ``paper`` holds the paper's
    (params M, FLOPs G) when the model is one of the paper's (:func:`paper_numbers`).
    """
    from mmengine.config import Config
    cfg = config if isinstance(config, Config) else Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    paper_shape = DEFAULT_SHAPES.get(cfg.get('default_scope'), (224, 224))
    shape = paper_shape if shape is None else tuple(shape)
    model = build_model_from_config(cfg)
    params = count_params(model)
    aux = getattr(model, 'auxiliary_head', None)
    aux_params = count_params(aux) if isinstance(aux, nn.Module) else 0
    model, notes = prepare_for_flops(model, num_proposals)
    report = count_flops(model, (1, 3, *shape), name=name or str(config))
    report.params = params
    report.notes = notes
    if aux_params:
        report.notes.append(f'params include the auxiliary head ({aux_params / 1e6:.2f} M)')
    report.paper = paper_numbers(cfg.model)
    if report.paper is not None and shape != paper_shape:
        report.notes.append(f'the paper reports {report.paper[0]} M / {report.paper[1]} G at '
                            f'{paper_shape[0]}x{paper_shape[1]}, not at this size')
        report.paper = None
    return report


# --------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------
def _giga(n: int) -> str:
    return f'{n / 1e9:.3f} G'


def format_report(report: FlopReport, per_operator: bool = True) -> str:
    """A plain-text table: params, per-operator flops, scan, headline, DMCA attention (extra line)."""
    rows = [('model', report.name), ('input', 'x'.join(str(s) for s in report.input_shape)),
            ('params', f'{report.params:,} ({report.params / 1e6:.2f} M)')]
    if report.backbone_params is not None:
        rows.append(('  backbone params', f'{report.backbone_params:,} ({report.backbone_params / 1e6:.2f} M)'))
    if per_operator:
        for op, n in sorted(report.by_operator.items(), key=lambda kv: -kv[1]):
            if op == SCAN_OP_NAME:
                continue
            label = f'  {op}'
            if op == LAYER_SCALE_OP_NAME:
                label += ' (official: depthwise 1x1 conv)'
            rows.append((label, f'{n:,}'))
        rows.append(('  = fvcore rules', f'{report.fvcore_flops:,} ({_giga(report.fvcore_flops)})'))
        rows.append((f'  + {SCAN_OP_NAME} (analytic)', f'{report.scan:,} ({_giga(report.scan)})'))
        for child, n in report.by_module.items():
            rows.append((f'  module {child}', f'{n:,} ({_giga(n)})'))
    rows.append(('FLOPs (paper rule)', f'{report.flops:,} ({_giga(report.flops)})'))
    ops = ', '.join(sorted(report.dmca_attention_by_op)) or 'none'
    rows.append((f'DMCA attention (not in FLOPs)', f'{report.dmca_attention:,} ({_giga(report.dmca_attention)}; '
                 f'{ops})'))
    rows.append(('FLOPs + DMCA attention', f'{report.flops_with_attention:,} '
                 f'({_giga(report.flops_with_attention)})'))
    if report.paper is not None:
        rows.append(('paper', f'{report.paper[0]} M params, {report.paper[1]} G FLOPs'))
    for note in report.notes:
        rows.append(('note', note))
    width = max(len(k) for k, _ in rows)
    line = '-' * (width + 2 + max(len(v) for _, v in rows))
    return '\n'.join([line] + [f'{k:<{width}}  {v}' for k, v in rows] + [line])
