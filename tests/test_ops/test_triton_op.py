"""TritonOp: eager calls run the implementation directly (through an autograd Function when a gradient is
needed), traced calls (torch.compile, opcheck's fake tensors) the registered custom op."""
from typing import Tuple

import pytest
import torch

from sparx_mm.ops.triton_op import TritonOp

second_output_grads = []


def _scale_and_sum(x: torch.Tensor, factor: float) -> Tuple[torch.Tensor, torch.Tensor]:
    return x * factor, x.sum().reshape(1)


def _fake(x, factor):
    return torch.empty_like(x), x.new_empty(1)


def _setup_context(ctx, inputs, output):
    ctx.factor = inputs[1]


def _backward(ctx, dy, dsum):
    second_output_grads.append(dsum)
    return dy * ctx.factor, None


SCALE = TritonOp('sparx_mm_test::scale_and_sum', _scale_and_sum, _fake, _setup_context, _backward)


class _OpCalled(Exception):
    pass


@pytest.fixture
def op_forbidden(monkeypatch):
    def forbidden(*args):
        raise _OpCalled
    monkeypatch.setattr(SCALE, 'op', forbidden)


def test_eager_calls_skip_the_custom_op(op_forbidden):
    x = torch.arange(4.0)
    with torch.no_grad():
        y, total = SCALE(x, 3.0)
    assert torch.equal(y, 3 * x) and total.item() == 6
    leaf = x.clone().requires_grad_()
    y, total = SCALE(leaf, 3.0)  # through the autograd Function
    assert y.requires_grad and not total.requires_grad
    second_output_grads.clear()
    y.sum().backward()
    assert torch.equal(leaf.grad, torch.full((4, ), 3.0))
    assert second_output_grads == [None]  # not differentiable: no materialised zeros


def test_traced_calls_use_the_custom_op(monkeypatch):
    def forbidden(*args):
        raise AssertionError('a traced call must go through the custom op')

    monkeypatch.setattr(SCALE, 'fn', forbidden)  # the op keeps the implementation it was registered with
    monkeypatch.setattr(SCALE, 'function', type('Forbidden', (), dict(apply=staticmethod(forbidden))))
    leaf = torch.arange(4.0).requires_grad_()
    report = torch.library.opcheck(SCALE.op, (leaf, 2.0))
    assert set(report.values()) == {'SUCCESS'}

    def loss(x):
        return SCALE(x, 2.0)[0].square().sum()

    explanation = torch._dynamo.explain(loss)(leaf)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0
    (grad, ) = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend='aot_eager')(leaf), leaf)
    assert torch.equal(grad, 8 * leaf.detach())
