import math

import pytest
import torch
import torch.nn.functional as F

from sparx_mm.models.sparx import DMCA, LEARNABLE_SCALE_INIT, channel_attention
from sparx_mm.models.sparx.dmca import adaptive_bins, pad_channels_by_pooling


def _pooled_padding(x, extra):
    """The official composition: the channel axis average-pooled adaptively, concatenated."""
    return torch.cat([x, F.adaptive_avg_pool3d(x.unsqueeze(1), (extra, *x.shape[2:])).squeeze(1)], 1)


def test_adaptive_bins_are_pytorchs_boundaries():
    assert adaptive_bins(5, 2) == [(0, 3), (2, 5)]  # overlapping where the bins do not divide the length
    assert adaptive_bins(654, 2) == [(0, 327), (327, 654)]
    assert adaptive_bins(2, 3) == [(0, 1), (0, 2), (1, 2)]


@pytest.mark.parametrize('channels, extra', [(5, 2), (654, 2), (9, 3), (10, 4), (2, 3), (639, 1), (7, 1)])
def test_channel_padding_is_the_adaptive_pooling_composition(channels, extra):
    torch.manual_seed(0)
    x = torch.randn(2, channels, 3, 4, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, channels + extra, 3, 4, dtype=torch.float64)
    padded = pad_channels_by_pooling(x, extra)
    expected = _pooled_padding(x, extra)
    torch.testing.assert_close(padded, expected, rtol=1e-12, atol=1e-12)
    grad, = torch.autograd.grad(padded, x, upstream)
    expected_grad, = torch.autograd.grad(expected, x, upstream)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert grad.is_contiguous()
    assert pad_channels_by_pooling(x, 0) is x


@pytest.mark.parametrize('channels, extra', [(654, 2), (639, 1)])
def test_channel_padding_float16(channels, extra):
    """Float16 as the GPUs train: the gradient bit for bit the composition's (one division by the bin's width, one
    add), the means within float16 rounding of the exact ones (the CPU's float16 adaptive pooling sums in float16,
    ~10x further off, so float64 is the reference here)."""
    torch.manual_seed(0)
    x = torch.randn(2, channels, 3, 4).half().requires_grad_()
    upstream = torch.randn(2, channels + extra, 3, 4).half()
    padded = pad_channels_by_pooling(x, extra)
    assert padded.dtype == torch.float16 and torch.equal(padded[:, :channels], x)
    exact = _pooled_padding(x.detach().double(), extra)[:, channels:]
    torch.testing.assert_close(padded[:, channels:].double(), exact, rtol=1e-3, atol=1e-4)
    grad, = torch.autograd.grad(padded, x, upstream)
    expected, = torch.autograd.grad(_pooled_padding(x, extra), x, upstream)
    assert torch.equal(grad, expected) and grad.is_contiguous()


def test_channel_padding_rejects_negative_extra():
    with pytest.raises(ValueError, match='extra must be >= 0'):
        pad_channels_by_pooling(torch.randn(1, 4, 2, 2), -1)


def test_channel_attention_is_grouped_softmax_over_channels():
    torch.manual_seed(0)
    q, k = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    v = torch.randn(2, 8, 6, 6)
    out = channel_attention(q, k, v, groups=4)
    for g in range(4):
        sl = slice(2 * g, 2 * g + 2)
        qg, kg, vg = q[:, sl].flatten(2), k[:, sl].flatten(2), v[:, sl].flatten(2)
        expected = torch.softmax(qg @ kg.transpose(1, 2) / math.sqrt(9), -1) @ vg
        torch.testing.assert_close(out[:, sl].flatten(2), expected, rtol=1e-5, atol=1e-6)
    scale = torch.tensor([0.7], requires_grad=True)
    learned = channel_attention(q, k, v, 4, scale)
    learned.sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    with torch.no_grad():  # inference takes the fused path with the same result
        torch.testing.assert_close(channel_attention(q, k, v, 4, scale), learned.detach(), rtol=1e-5, atol=1e-6)


def test_channel_attention_trains_on_explicit_products(monkeypatch):
    """While autograd records, the explicit products (SDPA's math fallback would compute half precision in float32);
    without it SDPA, with the same result."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3), torch.randn(2, 8, 6, 6, requires_grad=True)
    with torch.no_grad():
        inferred = channel_attention(q, k, v, 4)

    def no_sdpa(*args, **kwargs):
        raise AssertionError('SDPA called while autograd records')

    monkeypatch.setattr(F, 'scaled_dot_product_attention', no_sdpa)
    trained = channel_attention(q, k, v, 4)
    torch.testing.assert_close(trained.detach(), inferred, rtol=1e-5, atol=1e-6)
    grad, = torch.autograd.grad(trained.square().sum(), v)
    v64 = v.detach().double().requires_grad_()
    expected, = torch.autograd.grad(channel_attention(q.double(), k.double(), v64, 4).square().sum(), v64)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('dim, sr, out', [(8, 2, 16), (12, 1, 24), (20, 4, 40), (16, 2, 32)])
def test_dmca_shapes_and_padding(dim, sr, out):
    dmca = DMCA(dim, 3 * dim, out, sr_ratio=sr).eval()
    y = dmca(torch.randn(2, dim, 9, 7), torch.randn(2, 3 * dim, 9, 7))
    assert y.shape == (2, out, 9, 7)
    assert dmca.channel_padding == out - out // 3 * 3
    assert ('0' in dict(dmca.q.named_children())) and (sr == 1) == isinstance(dmca.q[0], torch.nn.Identity)


def test_dmca_without_reduction_replaces_x_by_query():
    """Official quirk: with sr = 1 the projected query, not x, goes into the concatenation."""
    torch.manual_seed(0)
    dmca = DMCA(8, 8, 24, sr_ratio=1).eval()
    x, s = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    y = dmca(x, s)
    # Changing x only through a direction the query projection ignores leaves the output unchanged.
    with torch.no_grad():
        dmca.q[1].weight.zero_()
    torch.testing.assert_close(dmca(x, s), dmca(x + 5, s))
    assert not torch.allclose(y, dmca(x, s))


def test_learnable_scale_init_and_errors():
    dmca = DMCA(8, 16, 16, sr_ratio=2, scale_mode='learnable')
    assert dmca.scale.item() == pytest.approx(0.0309877, abs=1e-7) == LEARNABLE_SCALE_INIT
    assert not hasattr(DMCA(8, 16, 16), 'scale')
    with pytest.raises(ValueError, match='multiple of 4'):
        DMCA(6, 6, 12)
    with pytest.raises(ValueError, match='sr_ratio must be an int >= 1'):
        DMCA(8, 8, 16, sr_ratio=0)
    with pytest.raises(ValueError, match=r'expected a shortcut of 16 channels, got \(1, 8, 4, 4\)'):
        dmca.eval()(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4))


def test_dmca_convolutions_run_through_the_layer_operators(monkeypatch):
    """The depthwise convs (the spatial reductions' strided ones included) and the 1x1 convs, the grouped fusion
    conv included, are the layer operators (Triton kernels on GPUs where they pay); the parameter keys are the
    official ones."""
    from sparx_mm.models import layers
    seen = []

    def recording(name, real):
        def op(x, weight, *args, **kwargs):
            seen.append((name, weight))
            return real(x, weight, *args, **kwargs)
        return op

    monkeypatch.setattr(layers, 'depthwise_conv2d_act', recording('depthwise', layers.depthwise_conv2d_act))
    monkeypatch.setattr(layers, 'pointwise_conv2d', recording('pointwise', layers.pointwise_conv2d))
    dmca = DMCA(8, 16, 16, sr_ratio=2).eval()
    with torch.no_grad(), layers.unfolded():  # module by module (inference folds the BatchNorms first)
        dmca(torch.randn(1, 8, 6, 6), torch.randn(1, 16, 6, 6))
    weights = {id(p): name for name, p in dmca.named_parameters()}
    assert [(op, weights[id(w)]) for op, w in seen] == [
        ('depthwise', 'shortcut_proj.0.weight'), ('pointwise', 'shortcut_proj.3.weight'),
        ('depthwise', 'q.0.0.weight'), ('pointwise', 'q.1.weight'), ('depthwise', 'k.0.0.weight'),
        ('pointwise', 'k.1.weight'), ('pointwise', 'v.0.weight'), ('depthwise', 'fuse.0.weight'),
        ('pointwise', 'fuse.2.weight')]
    assert [k for k in dmca.state_dict() if k.endswith('.weight')] == [
        'shortcut_norm.weight', 'shortcut_proj.0.weight', 'shortcut_proj.1.weight', 'shortcut_proj.3.weight',
        'q.0.0.weight', 'q.0.1.weight', 'q.1.weight', 'q.2.weight', 'k.0.0.weight', 'k.0.1.weight', 'k.1.weight',
        'k.2.weight', 'v.0.weight', 'v.1.weight', 'fuse.0.weight', 'fuse.2.weight']


@pytest.mark.parametrize('sr', [2, 3, 4])
def test_spatial_reduction_is_the_official_strided_conv(sr):
    """q's and k's reduction: a depthwise (sr + 1) x (sr + 1) conv of stride sr and padding (sr + 1) // 2, as the
    official nn.Conv2d (the layer operator where the kernel is odd, nn.Conv2d itself where it is even), then BN
    and GELU; the same output in training and (BatchNorm folded) in inference."""
    from sparx_mm.models.layers import DepthwiseConvAct
    torch.manual_seed(sr)
    dmca = DMCA(8, 16, 16, sr_ratio=sr)
    conv = dmca.q[0][0]
    assert isinstance(conv, DepthwiseConvAct) == (sr % 2 == 0)
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups, conv.bias) == (
        (sr + 1, sr + 1), (sr, sr), ((sr + 1) // 2, (sr + 1) // 2), 8, None)
    official = torch.nn.Conv2d(8, 8, sr + 1, stride=sr, padding=(sr + 1) // 2, groups=8, bias=False)
    official.load_state_dict(conv.state_dict())
    x = torch.randn(2, 8, 9, 11)
    torch.testing.assert_close(conv(x), official(x), rtol=1e-6, atol=1e-6)
    reduction = dmca.q[0]
    with torch.no_grad():
        reduction[1].running_mean.uniform_(-1, 1)
        reduction[1].running_var.uniform_(0.5, 2)
    expected = torch.nn.functional.gelu(reduction[1].eval()(official(x)))
    with torch.no_grad():
        torch.testing.assert_close(reduction.eval()(x), expected, rtol=1e-5, atol=1e-5)  # folded
    torch.testing.assert_close(reduction.eval()(x), expected, rtol=1e-6, atol=1e-6)  # grad mode: one by one
