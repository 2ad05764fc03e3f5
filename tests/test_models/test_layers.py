"""The fused-operator layers keep nn.Conv2d's parameters and compute what the plain module compositions do."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparx_mm.models.layers import ConvFFN, DepthwiseConvAct, SkipPath

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
