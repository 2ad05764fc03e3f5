import pytest
import torch

from sparx_mm.ops import cross_merge, cross_scan


def tiny():
    # [[0, 1, 2],
    #  [3, 4, 5]]
    return torch.arange(6.).view(1, 1, 2, 3)


def test_cross_scan_known_values():
    out = cross_scan(tiny())
    assert out.shape == (1, 4, 1, 6)
    expected = torch.tensor([
        [0, 1, 2, 3, 4, 5],  # row-major
        [0, 3, 1, 4, 2, 5],  # column-major
        [5, 4, 3, 2, 1, 0],  # row-major reversed
        [5, 2, 4, 1, 3, 0],  # column-major reversed
    ]).float().view(1, 4, 1, 6)
    assert torch.equal(out, expected)


@pytest.mark.parametrize('route,expected', [
    (0, [0, 1, 2, 3, 4, 5]),
    # sequence index i of a column-major route sits at (i % H, i // H)
    (1, [0, 2, 4, 1, 3, 5]),
    (2, [5, 4, 3, 2, 1, 0]),
    (3, [5, 3, 1, 4, 2, 0]),
])
def test_cross_merge_known_values(route, expected):
    y = torch.zeros(1, 4, 1, 6)
    y[0, route, 0] = torch.arange(6.)
    expected = torch.tensor(expected).float().view(1, 1, 6)
    assert torch.equal(cross_merge(y, height=2, width=3), expected)
    assert torch.equal(cross_merge(y.view(1, 4, 1, 2, 3)), expected)


@pytest.mark.parametrize('shape', [(2, 3, 4, 5), (1, 2, 1, 7), (2, 1, 6, 1),
                                   (1, 1, 1, 1)])
def test_adjoint(shape):
    g = torch.Generator().manual_seed(0)
    b, d, h, w = shape
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    y = torch.randn(b, 4, d, h * w, generator=g, dtype=torch.float64)
    lhs = (cross_scan(x) * y).sum()
    rhs = (x.flatten(2) * cross_merge(y, height=h, width=w)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_round_trip():
    x = torch.randn(2, 3, 4, 5)
    merged = cross_merge(cross_scan(x), height=4, width=5)
    torch.testing.assert_close(merged, 4 * x.flatten(2))
    merged5 = cross_merge(cross_scan(x).view(2, 4, 3, 4, 5))
    torch.testing.assert_close(merged5, 4 * x.flatten(2))


def test_gradient_of_cross_scan_is_cross_merge():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 20)
    cross_scan(x).backward(upstream)
    expected = cross_merge(upstream, height=4, width=5).view(2, 3, 4, 5)
    torch.testing.assert_close(x.grad, expected)


def test_gradient_of_cross_merge_is_cross_scan():
    y = torch.randn(2, 4, 3, 4, 5, requires_grad=True)
    upstream = torch.randn(2, 3, 20)
    cross_merge(y).backward(upstream)
    expected = cross_scan(upstream.view(2, 3, 4, 5)).view(2, 4, 3, 4, 5)
    torch.testing.assert_close(y.grad, expected)


def test_cross_scan_errors():
    with pytest.raises(ValueError, match=r'4-D \(B, D, H, W\)'):
        cross_scan(torch.randn(2, 3, 4))
    with pytest.raises(TypeError, match='torch.Tensor'):
        cross_scan([[1.0]])


@pytest.mark.parametrize('y,kwargs,match', [
    (torch.randn(2, 3, 4), {}, r'5-D \(B, 4, D, H, W\) or 4-D'),
    (torch.randn(2, 3, 4, 6), dict(height=2, width=3), r'4 routes'),
    (torch.randn(2, 3, 4, 2, 3), {}, r'4 routes'),
    (torch.randn(2, 4, 4, 6), {}, r'needs both height and width'),
    (torch.randn(2, 4, 4, 6), dict(height=2), r'needs both height and width'),
    (torch.randn(2, 4, 4, 6), dict(height=4, width=2), r'must equal'),
    (torch.randn(2, 4, 4, 2, 3), dict(height=3), r'disagree'),
])
def test_cross_merge_errors(y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cross_merge(y, **kwargs)
