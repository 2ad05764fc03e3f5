"""The fused-operator layers keep nn.Conv2d's parameters and compute what the plain module compositions do."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparx_mm.models.layers import ConvFFN, DepthwiseConvAct


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
