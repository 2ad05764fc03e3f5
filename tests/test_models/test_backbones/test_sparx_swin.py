"""SparX-Swin: sizes, any input size, the window attention's windows / shifts / padding, and the backbone
options it shares with SparX-Mamba."""
import math

import pytest
import torch
from mmengine.registry import MODELS

import sparx_mm  # noqa: F401 (registers SparXSwin)
from sparx_mm.models.backbones.sparx_swin import SparXSwin, default_num_heads
from sparx_mm.models.mixers.window_attention import WindowAttention

TINY = dict(depths=[1, 2, 3, 2], dims=[16, 32, 48, 64], num_heads=[1, 2, 3, 4], window_size=3,
            ganglion_strides=[1, 1, 2, 1], ganglion_starts=[None, 1, 0, 0], ganglion_windows=[None, None, 2, None])

# docs/variants.md: classification-model parameters (backbone + GroupNorm/Linear head, 1000 classes).
# Paper Table 9: T 26 M / 4.7 G, B 88 M / 16.2 G.
CLASSIFIER_PARAMS = {'t': 26_129_580, 'b': 86_798_379}


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def count(module):
    return sum(p.numel() for p in module.parameters())


def classifier_params(arch):
    backbone = SparXSwin(arch, out_indices=(3, ), out_norm=None)
    width = backbone.dims[-1]
    return count(backbone) + 2 * width + width * 1000 + 1000


def test_t_size_matches_paper_and_b_is_recorded():
    t = classifier_params('t')
    assert t == CLASSIFIER_PARAMS['t']
    assert abs(t - 26e6) < 0.3e6
    assert classifier_params('b') == CLASSIFIER_PARAMS['b']  # 1.2 M under the paper's 88 M (docs/variants.md)


def test_arch_settings():
    t = SparXSwin.resolve_arch('t')
    assert t['dims'] == [96, 192, 320, 576] and t['depths'] == [2, 2, 7, 2] and t['stem'] == 'v1'
    assert t['num_heads'] == [default_num_heads(d) for d in t['dims']] == [3, 6, 10, 18]
    b = SparXSwin.resolve_arch('b')
    assert b['dims'] == [120, 240, 396, 616] and b['depths'] == [2, 2, 27, 3]
    assert b['num_heads'] == [default_num_heads(d) for d in b['dims']] == [4, 8, 12, 22]


def test_t_plan_blocks_and_shifts():
    model = SparXSwin('t')
    assert [list(p.ganglion_layers) for p in model.plans] == [[], [1], [0, 2, 4, 6], [0, 1]]
    for stage, dim in zip(model.layers, model.dims):
        for j, block in enumerate(stage.blocks):
            assert block.op.shift == (j % 2 == 1) and block.op.window_size == 7
            if block.dmca is not None:  # the DMCA feeds the attention C channels
                assert block.dmca.out_channels == dim and block.op.qkv.in_features == dim


@pytest.mark.parametrize('size', [(64, 64), (70, 45), (33, 1), (1, 1), (97, 61)])
def test_any_input_size(size):
    model = SparXSwin(TINY).eval()
    h, w = size
    with torch.no_grad():
        outs = model(torch.randn(2, 3, h, w))
    for i, out in enumerate(outs):
        stride = 2 ** (i + 2)
        assert tuple(out.shape) == (2, TINY['dims'][i], math.ceil(h / stride), math.ceil(w / stride))
        assert torch.isfinite(out).all()


def test_t_at_224_and_odd_size():
    model = SparXSwin('t').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
        odd = model(torch.randn(1, 3, 75, 101))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 320, 14, 14), (1, 576, 7, 7)]
    assert [tuple(o.shape[2:]) for o in odd] == [(19, 26), (10, 13), (5, 7), (3, 4)]


def _reference_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Plain multi-head attention over ALL positions of x (one window), with the relative bias."""
    b, c, h, w = x.shape
    tokens = x.flatten(2).transpose(1, 2)
    heads, d = attn.num_heads, c // attn.num_heads
    q, k, v = attn.qkv(tokens).view(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    pos = torch.stack([ys.flatten(), xs.flatten()], 1)
    rel = pos[:, None] - pos[None] + attn.window_size - 1
    bias = attn.relative_position_bias_table[rel[..., 0] * (2 * attn.window_size - 1) + rel[..., 1]]
    scores = q @ k.transpose(-2, -1) * d ** -0.5 + bias.permute(2, 0, 1)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)
    return attn.proj(out).transpose(1, 2).reshape(b, c, h, w)


def test_windows_padding_and_small_maps_match_plain_attention():
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, window_size=4).eval()
    x = torch.randn(2, 16, 6, 5)  # padded to 8 x 8: four windows, three of them partly padding
    with torch.no_grad():
        out = attn(x)
        # each window sees exactly its real positions: padding is masked, not attended
        for rows, cols in [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 5)), (slice(4, 6), slice(0, 4)),
                           (slice(4, 6), slice(4, 5))]:
            expected = _reference_window_attention(attn, x[:, :, rows, cols])
            torch.testing.assert_close(out[:, :, rows, cols], expected, rtol=1e-5, atol=1e-5)
        # a map no larger than the window is a single (smaller) window, never shifted
        small = torch.randn(1, 16, 3, 2)
        shifted = WindowAttention(16, 2, window_size=4, shift=True).eval()
        shifted.load_state_dict(attn.state_dict())
        torch.testing.assert_close(shifted(small), _reference_window_attention(attn, small), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shift, position, rows, cols', [
    (False, (0, 0), range(0, 7), range(0, 7)),
    (False, (9, 12), range(7, 14), range(7, 14)),
    # shifted by 3: regions [0, 3), [3, 10), [10, 14) per axis (the wrapped-around regions stay apart)
    (True, (0, 0), range(0, 3), range(0, 3)),
    (True, (5, 12), range(3, 10), range(10, 14)),
    (True, (13, 1), range(10, 14), range(0, 3)),
])
def test_each_token_attends_exactly_its_window(shift, position, rows, cols):
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, window_size=7, shift=shift)
    x = torch.randn(1, 8, 14, 14, requires_grad=True)
    attn(x)[0, :, position[0], position[1]].sum().backward()
    support = x.grad[0].abs().sum(0) > 0
    expected = torch.zeros(14, 14, dtype=torch.bool)
    expected[rows.start:rows.stop, cols.start:cols.stop] = True
    assert torch.equal(support, expected)


def test_backward_reaches_every_parameter():
    model = SparXSwin(TINY, drop_path_rate=0.1, dmca_scale='learnable').train()
    outs = model(torch.randn(2, 3, 40, 36))
    sum(o.square().mean() for o in outs).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_shared_options_frozen_stages_with_cp_and_registry():
    model = SparXSwin(TINY, frozen_stages=1, norm_eval=True).train()
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    torch.manual_seed(0)
    plain = SparXSwin(TINY).train()
    ckpt = SparXSwin(TINY, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(sum(o.sum() for o in plain(x)), sum(o.sum() for o in ckpt(x)))
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRETRAIN
    from mmseg.registry import MODELS as SEG
    for registry in (MODELS, DET, SEG, PRETRAIN):
        assert isinstance(registry.build(dict(type='SparXSwin', arch=TINY, out_indices=(1, ))), SparXSwin)


def test_pretrained_init_cfg_loads_own_checkpoint(tmp_path):
    torch.manual_seed(1)
    source = SparXSwin(TINY, out_indices=(3, ), out_norm=None)
    path = tmp_path / 'sparx_swin_tiny.pth'
    # an mmpretrain checkpoint: backbone.* and head.* keys
    state = {'backbone.' + k: v for k, v in source.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(10, 64)
    torch.save({'state_dict': state}, path)
    model = SparXSwin(TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items())
    assert 'out_norms.0.weight' in own  # dense-prediction output norms stay at their init


@pytest.mark.parametrize('arch, match', [
    (dict(TINY, num_heads=[1, 2, 5, 4]), "'num_heads' must hold, per stage, a positive int dividing the width"),
    (dict(TINY, window_size=0), "'window_size' must be an int >= 1"),
    (dict(TINY, d_state=1), r"unknown \['d_state'\]"),
    (dict(TINY, aggregator='sum'), r"unknown aggregator 'sum'.*accepted: \['dmca', 'concat', 'no_cgca', 'no_skip'\]"),
    (dict(TINY, ganglion_starts=[None, 1, 3, 0]), 'start=3 leaves a stage of depth 3 without ganglion layers'),
])
def test_bad_arch_gets_clear_errors(arch, match):
    with pytest.raises(ValueError, match=match):
        SparXSwin(arch)
