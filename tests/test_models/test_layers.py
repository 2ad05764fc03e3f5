"""The fused-operator layers keep nn.Conv2d's parameters and compute what the plain module compositions do."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparx_mm.models import layers
from sparx_mm.models.layers import ConvFFN, DepthwiseConvAct, DropPath, FoldingSequential, PointwiseConv, SkipPath

from .helpers import saved_bytes


def _seeded(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


@pytest.mark.parametrize('residual,activation,act', [(True, None, nn.Identity()), (True, 'gelu', nn.GELU()),
                                                     (False, 'silu', nn.SiLU())])
def test_depthwise_conv_act_is_a_conv2d_followed_by_its_residual_and_activation(residual, activation, act):
    fused = _seeded(DepthwiseConvAct(6, 5, residual=residual, activation=activation))
    plain = nn.Conv2d(6, 6, 5, padding=2, groups=6)
    plain.load_state_dict(fused.state_dict())  # the same keys and shapes: checkpoints load either way
    x = torch.randn(2, 6, 7, 9)
    expected = act(x + plain(x) if residual else plain(x))
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float16, torch.float32, torch.float64])
def test_drop_path_and_its_per_sample_factors_come_from_the_same_draws(dtype):
    """DropPath zeroes whole samples and scales the rest by 1 / keep (x * mask / keep in x's dtype, one rounding);
    sample_scale gives the same draws as factors (for the fused residual), in any dtype; inactive (eval, or
    probability 0) it is the identity and the factors are ones."""
    drop = DropPath(0.25).train()
    x = torch.randn(16, 3, 2, 2).to(dtype)
    torch.manual_seed(4)
    y = drop(x)
    torch.manual_seed(4)
    factors = drop.sample_scale(16, x.device, dtype)
    torch.manual_seed(4)
    mask = torch.empty(16).bernoulli_(0.75)
    assert 0 < mask.sum() < 16  # both kinds of sample among these draws
    assert torch.equal(y, x * mask.to(dtype).view(-1, 1, 1, 1) / 0.75)
    assert torch.equal(factors, mask.to(dtype) / 0.75) and factors.dtype == dtype
    assert torch.equal(DropPath(0.25).eval()(x), x) and torch.equal(DropPath(0.0).train()(x), x)
    assert torch.equal(DropPath(0.25).eval().sample_scale(3, x.device), torch.ones(3))


def test_strided_depthwise_conv_act_is_the_strided_conv2d_and_refuses_a_residual():
    fused = _seeded(DepthwiseConvAct(6, 3, activation='gelu', stride=2))
    plain = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 6, 7, 9)
    torch.testing.assert_close(fused(x), F.gelu(plain(x)), rtol=1e-5, atol=1e-6)
    assert fused(x).shape == (2, 6, 4, 5) and 'stride=(2, 2)' in repr(fused)
    with pytest.raises(ValueError, match='residual=True needs stride 1, got stride 2'):
        DepthwiseConvAct(6, 3, residual=True, stride=2)


@pytest.mark.parametrize('act_layer', [nn.GELU, nn.ReLU])
def test_conv_ffn_equals_the_official_composition(act_layer):
    """fc1 (with its bias) -> h + dwconv(h) -> act -> fc2, whichever of its steps are fused."""
    ffn = _seeded(ConvFFN(4, 8, act_layer=act_layer))
    x = torch.randn(2, 4, 6, 5)
    h = F.conv2d(x, ffn.fc1.weight, ffn.fc1.bias)
    h = act_layer()(h + F.conv2d(h, ffn.dwconv.weight, ffn.dwconv.bias, padding=1, groups=8))
    expected = F.conv2d(h, ffn.fc2.weight, ffn.fc2.bias)
    torch.testing.assert_close(ffn(x), expected, rtol=1e-5, atol=1e-5)
    assert sorted(ffn.state_dict()) == ['dwconv.bias', 'dwconv.weight', 'fc1.bias', 'fc1.weight', 'fc2.bias',
                                        'fc2.weight']


@pytest.mark.parametrize('drop,with_skip', [(0.0, False), (0.0, True), (0.3, True)])
def test_conv_ffn_recomputing_its_hidden_map_changes_nothing_but_the_saved_memory(drop, with_skip):
    plain = _seeded(ConvFFN(4, 16, drop=drop)).train()
    recomputing = _seeded(ConvFFN(4, 16, drop=drop, recompute_hidden=True)).train()
    x = torch.randn(2, 4, 6, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    skip = SkipPath(torch.randn(2, 4, 6, 5), torch.rand(4), torch.randn(4)) if with_skip else None
    torch.manual_seed(3)  # the same dropout masks
    y, plain_bytes = saved_bytes(lambda: plain(x, skip))
    torch.manual_seed(3)
    y2, recomputing_bytes = saved_bytes(lambda: recomputing(x2, skip))
    assert torch.equal(y, y2)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    y2.backward(upstream)
    assert torch.equal(x.grad, x2.grad)
    for p, p2 in zip(plain.parameters(), recomputing.parameters()):
        assert torch.equal(p.grad, p2.grad)
    if drop:  # a dropout mask is not replayed: the map is kept
        assert recomputing_bytes == plain_bytes
    else:  # no longer kept: the activated hidden map (2 x 16 x 6 x 5 float32), which fc2 saved
        assert plain_bytes - recomputing_bytes == 2 * 16 * 6 * 5 * 4
    # Inference and eval keep the plain path.
    recomputing.eval()
    assert torch.equal(recomputing(x2), plain.eval()(x))


def _with_statistics(sequential, seed=1):
    """Random BatchNorm statistics and affine parameters, so that a fold that drops any of them shows."""
    g = torch.Generator().manual_seed(seed)
    for m in sequential.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.3)
            if m.affine:
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.num_features, generator=g))
                    m.bias.copy_(torch.randn(m.num_features, generator=g))
    return sequential


def _folding_cases():
    """(children, fused calls expected in inference): a depthwise conv + BN + GELU and a 1x1 conv + GELU (the DMCA's
    shortcut projection), a strided plain conv + BN + GELU (its spatial reduction), a grouped 1x1 conv + BN without
    BN affine parameters, a GELU of the tanh form (not fused), a depthwise conv with a residual (its BN not folded)."""
    return [
        ([DepthwiseConvAct(6, 3, bias=False), nn.BatchNorm2d(6), nn.GELU(), PointwiseConv(6, 8), nn.GELU()],
         dict(fold=1, depthwise='gelu', pointwise='gelu')),
        ([nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False), nn.BatchNorm2d(6), nn.GELU()], dict(fold=1)),
        ([PointwiseConv(6, 9, groups=3), nn.BatchNorm2d(9, affine=False), nn.GELU(approximate='tanh')],
         dict(fold=1, pointwise=None)),
        ([DepthwiseConvAct(6, 3, residual=True), nn.BatchNorm2d(6), nn.SiLU()], dict(depthwise=None)),
    ]


@pytest.mark.parametrize('case', range(4))
def test_folding_sequential_runs_its_children_with_fewer_passes_in_inference(case, monkeypatch):
    """No grad: BatchNorms in eval mode fold into the convolutions before them and exact GELUs run in the layer
    kernels, within float32 rounding of the children run one by one (an nn.Sequential with the same state dict);
    in grad mode, and in training mode, FoldingSequential is nn.Sequential exactly."""
    children, expected_calls = _folding_cases()[case]
    folding = _with_statistics(_seeded(FoldingSequential(*children)).eval())
    plain = nn.Sequential(*children)
    assert list(folding.state_dict()) == list(plain.state_dict())
    calls = []
    for name in ('fold_batch_norm', 'depthwise_conv2d_act', 'pointwise_conv2d'):
        real = getattr(layers, name)

        def recording(*args, _name=name, _real=real, **kwargs):
            activation = kwargs.get('activation', args[4] if _name == 'depthwise_conv2d_act' else None)
            calls.append((_name.split('_')[0], activation))
            return _real(*args, **kwargs)
        monkeypatch.setattr(layers, name, recording)
    x = torch.randn(2, 6, 9, 7)
    with torch.no_grad():
        fused = folding(x)
    expected = {('fold' if k == 'fold' else k, None if k == 'fold' else v) for k, v in expected_calls.items()}
    assert set(calls) == expected and calls.count(('fold', None)) == expected_calls.get('fold', 0), calls
    monkeypatch.undo()
    torch.testing.assert_close(fused, plain(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(folding(x), plain(x))  # grad mode: the children one by one
    folding.train()
    assert torch.equal(folding(x), plain(x))  # training mode: batch statistics, nothing folds


def _input_layouts(sequence):
    """Records, for each call of the sequence's first child, whether its input was channels-last."""
    layouts = []
    sequence[0].register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    return layouts


def test_folding_sequential_runs_plain_conv_norm_sequences_channels_last_in_grad_mode(monkeypatch):
    """In grad mode on a CHANNELS_LAST_DEVICES device (CUDA; here the CPU, patched in), a sequence of plain convs,
    BatchNorms and GELUs (SparX's stem) runs on a channels-last copy of its input: NCHW-contiguous output, and the
    outputs and gradients of the NCHW run. No-grad inference folds in NCHW as before; sequences with a layer
    operator or a norm subclass (SyncBatchNorm) stay NCHW; without the patch the CPU is not such a device. The
    conversions hand the gradients back in each side's layout: channels-last into the sequence's last child, NCHW
    out of it (convert_memory_format)."""
    def stem():
        return FoldingSequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4), nn.GELU(),
                                 nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8))
    x = torch.randn(2, 3, 16, 12)
    nchw = _seeded(stem())
    expected = nchw(x.requires_grad_())
    expected.square().sum().backward()
    assert not layers.runs_channels_last(nchw, x)

    monkeypatch.setattr(layers, 'CHANNELS_LAST_DEVICES', ('cpu', ))
    channels_last = _seeded(stem())
    layouts = _input_layouts(channels_last)
    grad_layouts = []
    channels_last[-1].register_full_backward_hook(
        lambda module, grad_input, grad_output: grad_layouts.append(
            grad_output[0].is_contiguous(memory_format=torch.channels_last)))
    x2 = x.detach().clone().requires_grad_()
    out = channels_last(x2)
    assert layouts == [True] and out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    assert grad_layouts == [True] and x2.grad.is_contiguous()
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-5)
    for p, p2 in zip(nchw.parameters(), channels_last.parameters()):
        torch.testing.assert_close(p2.grad, p.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # inference folds the BatchNorms into the convs (F.conv2d): the first child is not called
        folded = channels_last.eval()(x)
    assert layouts == [True]
    torch.testing.assert_close(folded, nn.Sequential(*channels_last)(x), rtol=1e-5, atol=1e-5)

    for children in ([DepthwiseConvAct(4, 3, bias=False), nn.BatchNorm2d(4), nn.GELU()],
                     [nn.Conv2d(4, 4, 3, padding=1), nn.SyncBatchNorm(4), nn.GELU()]):
        other = FoldingSequential(*children).eval()
        layouts = _input_layouts(other)
        other(torch.randn(1, 4, 5, 5, requires_grad=True))
        assert not layers.runs_channels_last(other, x) and layouts == [False]
    assert not layers.runs_channels_last(stem(), torch.randn(2, 3, 16))  # not a 4-D map
