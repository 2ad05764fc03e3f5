"""recompute_saved: autograd keeps a recipe instead of a tensor, and the backward pass gives the same gradients."""
import pytest
import torch
import torch.nn.functional as F

from sparx_mm.models.recompute import recompute_saved

from .helpers import saved_bytes


def _norm(x):
    return F.group_norm(x, 1)


def _run(recompute, x, weight, calls=None):
    """y = conv1x1(group_norm(x), weight): the conv keeps its input, which group_norm's input rebuilds."""
    def recipe(t):
        if calls is not None:
            calls.append(t.shape)
        return _norm(t)

    normed = _norm(x)
    with recompute_saved(normed, recipe, x, enabled=recompute):
        return F.conv2d(normed, weight)


def test_the_recipe_replaces_the_saved_tensor_and_the_gradients_stay_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7, requires_grad=True)
    weight = torch.randn(4, 8, 1, 1, requires_grad=True)
    upstream = torch.randn(2, 4, 5, 7)
    results = {}
    for recompute in (False, True):
        calls = []
        # Counting hooks, active before ours (as a user's would be): they still see every other tensor.
        y, kept = saved_bytes(lambda: _run(recompute, x, weight, calls))
        x.grad = weight.grad = None
        y.backward(upstream)
        results[recompute] = (y, x.grad, weight.grad, kept, calls)
    (y0, gx0, gw0, bytes0, calls0), (y1, gx1, gw1, bytes1, calls1) = results[False], results[True]
    assert torch.equal(y0, y1) and torch.equal(gx0, gx1) and torch.equal(gw0, gw1)
    assert calls0 == [] and calls1 == [x.shape]  # recomputed once, in the backward pass
    assert bytes0 - bytes1 == x.numel() * 4  # the normalised map is no longer kept; everything else is


def test_second_order_gradients_through_the_recomputed_tensor_stay_exact():
    """A penalty on a weight gradient (a gradient-norm penalty, MAML's outer loss) differentiates the conv's weight
    gradient with respect to its saved input: the recomputed tensor must take the saved one's place in the graph
    (autograd gives the unpack hook's result the saved tensor's grad_fn)."""
    torch.manual_seed(2)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 8, 1, 1, dtype=torch.float64, requires_grad=True)
    results = []
    for recompute in (False, True):
        calls = []
        (gw,) = torch.autograd.grad(_run(recompute, x, weight, calls).square().sum(), weight, create_graph=True)
        (gx,) = torch.autograd.grad(gw.square().sum(), x)
        results.append((gx, calls))
    (plain, calls0), (recomputed, calls1) = results
    # Recomputed by each backward pass that reads it (the second-order one reads it through the same hook).
    assert calls0 == [] and calls1 and all(shape == x.shape for shape in calls1)
    assert plain.abs().max() > 0 and torch.equal(recomputed, plain)


def test_nothing_changes_without_gradients_or_when_disabled():
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    weight = torch.randn(4, 8, 1, 1)
    calls = []
    with torch.no_grad():
        _run(True, x, weight, calls)
    _run(False, x, weight, calls).sum().backward()
    _run(True, x.detach(), weight, calls)  # nothing needs a gradient
    assert calls == []


def test_contexts_nest_and_each_tensor_gets_its_own_recipe():
    torch.manual_seed(1)
    x = torch.randn(2, 6, 4, 4, requires_grad=True)
    w1, w2 = torch.randn(6, 6, 1, 1, requires_grad=True), torch.randn(3, 6, 1, 1, requires_grad=True)
    calls = []

    def forward(recompute):
        a = _norm(x)
        with recompute_saved(a, lambda t: calls.append('a') or _norm(t), x, enabled=recompute):
            h = F.conv2d(a, w1)
            b = torch.tanh(h)
            with recompute_saved(b, lambda t: calls.append('b') or torch.tanh(t), h, enabled=recompute):
                return F.conv2d(b, w2) + F.conv2d(a, w2[:, :6])

    grads = []
    for recompute in (False, True):
        x.grad = w1.grad = w2.grad = None
        forward(recompute).sum().backward()
        grads.append((x.grad, w1.grad, w2.grad))
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(recomputed, plain, rtol=0, atol=0)
    assert sorted(calls) == ['a', 'a', 'b']  # a was saved by two convs (the inner context sees it too)


def test_the_recipe_replays_the_forward_autocast_state():
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    weight = torch.randn(4, 8, 1, 1, requires_grad=True)
    seen = []

    def recipe(t):
        seen.append(torch.is_autocast_enabled('cpu'))
        return F.group_norm(t, 1).to(torch.bfloat16)

    with torch.autocast('cpu', dtype=torch.bfloat16):
        normed = F.group_norm(x, 1).to(torch.bfloat16)
        with recompute_saved(normed, recipe, x):
            y = F.conv2d(normed, weight)
    y.float().sum().backward()
    assert seen == [True] and weight.grad is not None


def test_a_recipe_that_gives_another_tensor_is_an_error():
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    weight = torch.randn(4, 8, 1, 1, requires_grad=True)
    normed = _norm(x)
    with recompute_saved(normed, lambda t: _norm(t)[:, :4], x):
        y = F.conv2d(normed, weight)
    with pytest.raises(RuntimeError, match=r'recompute_saved: the recipe gave \(2, 4, 3, 3\) torch.float32, the '
                                           r'forward pass saved \(2, 8, 3, 3\) torch.float32'):
        y.sum().backward()


def test_an_error_inside_leaves_no_recipe_behind():
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    weight = torch.randn(4, 8, 1, 1, requires_grad=True)
    normed = _norm(x)
    with pytest.raises(ValueError):
        with recompute_saved(normed, _norm, x):
            raise ValueError('inside')
    y, kept = saved_bytes(lambda: F.conv2d(normed, weight))
    y.sum().backward()
    assert kept == normed.numel() * 4 + weight.numel() * 4  # kept as usual
