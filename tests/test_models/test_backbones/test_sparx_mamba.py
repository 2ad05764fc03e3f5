import math

import pytest
import torch
from mmengine.registry import MODELS

import sparx_mm  # noqa: F401 (registers SparXMamba)
from sparx_mm.models.backbones.sparx_mamba import SparXMamba

from ..helpers import saved_bytes

TINY = dict(depths=[1, 2, 3, 2], dims=[16, 32, 48, 64], stem='v2', ganglion_strides=[1, 1, 2, 1],
            ganglion_starts=[None, 1, 0, 0], ganglion_windows=[None, None, 2, None])

# SPEC section 1: parameters of the official code.
CLASSIFIER_PARAMS = {'t': 27_051_794, 's': 47_444_712, 'b': 83_536_168}
DETECTION_PARAMS = {'t': 26_540_017, 's': 46_900_953, 'b': 82_900_689}
SEGMENTATION_PARAMS = {'t': 26_540_010, 's': 46_900_944, 'b': 82_900_680}


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('arch', ['t', 's', 'b'])
def test_parameter_counts_equal_official(arch):
    cls_backbone = SparXMamba(arch, out_indices=(3, ), out_norm=None)
    width = cls_backbone.dims[-1]
    head = 2 * width + width * 1000 + 1000  # GroupNorm + Linear of the official classifier
    assert count(cls_backbone) + head == CLASSIFIER_PARAMS[arch]
    assert count(SparXMamba(arch, dmca_scale='learnable')) == DETECTION_PARAMS[arch]
    assert count(SparXMamba(arch)) == SEGMENTATION_PARAMS[arch]


def test_t_at_224_gives_four_maps_with_strides_4_to_32():
    model = SparXMamba('t').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 320, 14, 14), (1, 512, 7, 7)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('size', [(64, 64), (96, 160), (70, 45), (33, 1), (200, 264)])
def test_any_input_size_rounds_up_per_stride(size):
    """Sides that are not multiples of 32 work: each stride-2 step rounds up (documented)."""
    model = SparXMamba(TINY).eval()
    h, w = size
    with torch.no_grad():
        outs = model(torch.randn(2, 3, h, w))
    for i, out in enumerate(outs):
        stride = 2 ** (i + 2)
        assert tuple(out.shape) == (2, TINY['dims'][i], math.ceil(h / stride), math.ceil(w / stride))


def test_out_indices_select_and_order_outputs():
    model = SparXMamba(TINY, out_indices=(3, 1)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 32]
    assert sorted(model.out_norms.keys()) == ['1', '3']
    assert [o.shape[1] for o in SparXMamba(TINY, out_indices=-1).eval()(torch.randn(1, 3, 32, 32))] == [64]


def test_out_norm_is_layernorm_over_channels():
    model = SparXMamba(TINY, out_indices=(0, ), out_norm='layernorm').eval()
    raw = SparXMamba(TINY, out_indices=(0, ), out_norm=None).eval()
    raw.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(1, 3, 32, 32)
    normed, plain = model(x)[0], raw(x)[0]
    expected = torch.nn.functional.layer_norm(plain.permute(0, 2, 3, 1), (16, ), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(normed, expected)


def test_backward_reaches_every_parameter_and_drop_path():
    model = SparXMamba(TINY, drop_path_rate=0.1, dmca_scale='learnable').train()
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    rates = [b.drop_path.drop_prob for s in model.layers for b in s.blocks if hasattr(b.drop_path, 'drop_prob')]
    assert max(rates) == pytest.approx(0.1) and rates == sorted(rates)


def test_with_cp_gives_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = SparXMamba(TINY).train()
    ckpt = SparXMamba(TINY, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    sum(o.sum() for o in plain(x)).backward()
    sum(o.sum() for o in ckpt(x2)).backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)


def test_recomputation_flags_reach_every_layer_and_change_no_gradient_only_the_saved_memory():
    from sparx_mm.models.layers import ConvFFN
    from sparx_mm.models.mixers.ss2d import SS2D
    torch.manual_seed(0)
    recomputing = SparXMamba(TINY, ffn_recompute=True).train()
    keeping = SparXMamba(TINY, ffn_recompute=False, norm_recompute=False).train()
    with_cp = SparXMamba(TINY, with_cp=True, ffn_recompute=True)
    default = SparXMamba(TINY)  # the FFNs keep their hidden maps, SS2D recomputes its normalised output
    for model, ffn, norm in ((recomputing, True, True), (keeping, False, False), (with_cp, False, False),
                             (default, False, True)):
        assert {m.recompute_hidden for m in model.modules() if isinstance(m, ConvFFN)} == {ffn}
        assert {m.norm_recompute for m in model.modules() if isinstance(m, SS2D)} == {norm}
    for flag in ('ffn_recompute', 'norm_recompute'):
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'yes'"):
            SparXMamba(TINY, **{flag: 'yes'})
    keeping.load_state_dict(recomputing.state_dict())
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    saved = []
    for model, inputs in ((recomputing, x), (keeping, x2)):
        outs, kept = saved_bytes(lambda: model(inputs))
        sum(o.sum() for o in outs).backward()
        saved.append(kept)
    assert torch.equal(x.grad, x2.grad)
    for (name, p), p2 in zip(recomputing.named_parameters(), keeping.parameters()):
        assert torch.equal(p.grad, p2.grad), name
    # No longer kept, per block: the normalised scan output (2C channels) and the FFN's hidden map (4C), float32
    # here.
    side = [64 // 2 ** (i + 2) for i in range(4)]
    expected = sum(depth * 6 * dim * s * s * 2 * 4 for depth, dim, s in zip(TINY['depths'], TINY['dims'], side))
    assert saved[1] - saved[0] == expected


class _Checkpointed(torch.nn.Module):
    """A block under torch.utils.checkpoint, as a user's wrapper puts it (FSDP's apply_activation_checkpointing)."""

    def __init__(self, block, use_reentrant):
        super().__init__()
        self.block, self.use_reentrant = block, use_reentrant

    def forward(self, x, shortcut=None):
        return torch.utils.checkpoint.checkpoint(self.block, x, shortcut, use_reentrant=self.use_reentrant)


@pytest.mark.parametrize('use_reentrant', [False, True])
def test_recomputation_inside_a_users_checkpointed_blocks_keeps_the_gradients(use_reentrant):
    """Non-reentrant checkpoint installs saved-tensor hooks as the recomputation does; reentrant checkpoint reruns
    the forward pass under autograd. Either way the gradients must be those of a model that keeps its maps."""
    torch.manual_seed(0)
    recomputing = SparXMamba(TINY).train().double()
    keeping = SparXMamba(TINY, ffn_recompute=False, norm_recompute=False).train().double()
    keeping.load_state_dict(recomputing.state_dict())
    for stage in recomputing.layers:
        stage.blocks = torch.nn.ModuleList(_Checkpointed(block, use_reentrant) for block in stage.blocks)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    for model, inputs in ((recomputing, x), (keeping, x2)):
        sum(o.square().mean() for o in model(inputs)).backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=0)
    for (name, p), p2 in zip(recomputing.named_parameters(), keeping.parameters()):
        torch.testing.assert_close(p.grad, p2.grad, rtol=1e-10, atol=1e-14, msg=name)


def test_frozen_stages_and_norm_eval():
    model = SparXMamba(TINY, frozen_stages=2, norm_eval=True)
    model.train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[1].parameters())
    assert all(p.requires_grad for p in model.layers[2].parameters())
    assert not model.layers[0].training and model.layers[2].training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert not any(p.requires_grad for p in model.out_norms['0'].parameters())
    assert all(p.requires_grad for p in model.out_norms['2'].parameters())


def test_inference_folds_every_batch_norm_and_the_dmca_gelus(monkeypatch):
    """SparX-T without grad: its 43 BatchNorms (stem, downsampling, DMCAs) fold into the convolutions before them
    and 24 GELUs (each DMCA's two in its shortcut projection, and those of the query's and key's spatial
    reductions in the five DMCAs of stages 2 and 3) run in the layer kernels; the outputs equal the
    unfolded pass's (layers.unfolded) to float32 rounding, with BatchNorm statistics and parameters away from
    their initial values."""
    from sparx_mm.models import layers
    model = SparXMamba('t').eval()
    g = torch.Generator().manual_seed(0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        with torch.no_grad():
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
    folds, gelus = [], []
    real_fold, real_pointwise, real_depthwise = layers.fold_batch_norm, layers.pointwise_conv2d, \
        layers.depthwise_conv2d_act
    monkeypatch.setattr(layers, 'fold_batch_norm', lambda *a: folds.append(1) or real_fold(*a))
    monkeypatch.setattr(layers, 'pointwise_conv2d', lambda *a, **k: (
        gelus.append(1) if k.get('activation') == 'gelu' else None) or real_pointwise(*a, **k))
    # A depthwise GELU of a folded weight (not the module's parameter) is one FoldingSequential added.
    monkeypatch.setattr(layers, 'depthwise_conv2d_act', lambda *a, **k: (
        gelus.append(1) if a[4] == 'gelu' and not isinstance(a[1], torch.nn.Parameter) else None)
        or real_depthwise(*a, **k))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        with layers.unfolded():
            expected = model(x)
        assert not folds
        gelus.clear()
        outputs = model(x)
    assert len(bns) == len(folds) == 43
    assert len(gelus) == 2 * 7 + 2 * 5  # SparX-T has 7 DMCAs, 5 of them with spatial reductions
    for out, ref in zip(outputs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_registered_once_in_root_and_found_by_downstream_registries():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRETRAIN
    from mmseg.registry import MODELS as SEG
    for registry in (MODELS, DET, SEG, PRETRAIN):
        model = registry.build(dict(type='SparXMamba', arch=TINY, out_indices=(2, 3)))
        assert isinstance(model, SparXMamba)
    assert 'SparXMamba' in MODELS.module_dict
    assert all('SparXMamba' not in r.module_dict for r in (DET, SEG, PRETRAIN))


def test_sync_bn_norm_cfg():
    model = SparXMamba(TINY, norm_cfg=dict(type='SyncBN'))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(arch='xl'), KeyError, r"unknown arch 'xl'; choose one of \['b', 's', 't'\]"),
    (dict(arch=['t']), TypeError, 'arch must be a str or a dict'),
    (dict(arch=dict(depths=[2, 2])), ValueError, r"missing \['dims'\]"),
    (dict(arch=dict(depths=[2, 2], dims=[32, 64], window=3)), ValueError, r"unknown \['window'\]"),
    (dict(arch=dict(depths=[2, 2], dims=[32])), ValueError, "'dims' must be a list with one entry per stage"),
    (dict(arch=dict(depths=[2, 0], dims=[32, 64])), ValueError, "'depths' must hold positive ints"),
    (dict(arch=dict(depths=[2, 2], dims=[32, 66])), ValueError, 'multiples of 4'),
    (dict(arch=dict(depths=[2, 2], dims=[32, 64], stem='v3')), ValueError, "'stem' must be one of"),
    (dict(arch=dict(depths=[2, 2], dims=[32, 64], ganglion_strides=[1, 0], ganglion_starts=[0, 0])),
     ValueError, r'stride \(S\) must be an int >= 1'),
    (dict(out_indices=(4, )), ValueError, r'out_indices entries must be ints in \[-4, 3\]'),
    (dict(out_indices=(1, 1)), ValueError, 'repeated stages'),
    (dict(out_indices=()), TypeError, 'non-empty sequence'),
    (dict(frozen_stages=5), ValueError, r'frozen_stages must be an int in \[-1, 4\]'),
    (dict(frozen_stages=-2), ValueError, r'frozen_stages must be an int in \[-1, 4\]'),
    (dict(out_norm='bn'), ValueError, 'out_norm must be one of'),
    (dict(dmca_scale='auto'), ValueError, 'scale_mode must be one of'),
    (dict(drop_path_rate=1.5), ValueError, r'drop_path_rate must be in \[0, 1\)'),
])
def test_bad_arguments_get_clear_errors(kwargs, error, match):
    kwargs.setdefault('arch', TINY)
    with pytest.raises(error, match=match):
        SparXMamba(**kwargs)


def test_bad_input_gets_clear_error():
    model = SparXMamba(TINY)
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\), got \(1, 1, 32, 32\)'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='expects images of shape'):
        model(torch.randn(3, 32, 32))


def test_torch_compile_captures_the_whole_backbone_in_one_graph():
    """torch.compile fuses across blocks only if dynamo traces the backbone without graph breaks (a break each
    block cost ~30 % of the compiled speed on a GPU, docs/benchmarks.md); inference and training alike."""
    torch._dynamo.reset()
    model = SparXMamba('t', out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    model.train()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 64, 64))
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    torch._dynamo.reset()
