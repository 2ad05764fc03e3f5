"""concat_shuffled: the torch path against the definition (shuffle_groups of the concatenation), errors, the
dispatch, and the Triton kernel under Triton's CPU interpreter."""
import re

import pytest
import torch

from sparx_mm.ops import concat_shuffled, concat_shuffled_reference, shuffle_groups

from .helpers import TritonCalled, intercept_triton, run_in_triton_interpreter


def test_shuffle_groups_rotates_channels():
    x = torch.arange(12.).view(1, 12, 1, 1)  # C = 4: [x0..x3, a0..a3, v0..v3]
    out = shuffle_groups(x, 3).flatten().tolist()
    # new channel g*C + c = old channel 3c + g
    assert out == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    assert shuffle_groups(torch.arange(4.).view(1, 4, 1, 1), 2).flatten().tolist() == [0, 2, 1, 3]


@pytest.mark.parametrize('channels, groups', [([4, 4, 4], 3), ([320, 320, 320], 3), ([7, 7, 7], 3), ([6, 6], 2),
                                              ([3, 9], 3), ([1, 2, 3, 6], 4)])
def test_concat_shuffled_is_the_shuffled_concatenation_with_contiguous_gradients(channels, groups):
    """One pass (the DMCA's x, attention and values, 320 channels each at SparX-T's stage 3; channel counts that
    do not divide by the groups; blocks of unequal size): the values, dtype and gradients of
    shuffle_groups(torch.cat(...)), bit for bit, each input's gradient contiguous (not a slice of one tensor)."""
    tensors = [torch.randn(2, c, 3, 5, requires_grad=True) for c in channels]
    tensors[0] = tensors[0].detach().double().requires_grad_()  # torch.cat's dtype promotion, kept
    out = concat_shuffled(tensors, groups, impl='reference')
    expected = shuffle_groups(torch.cat(tensors, dim=1), groups)
    assert out.dtype == expected.dtype == torch.float64 and torch.equal(out, expected)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, tensors, upstream)
    references = torch.autograd.grad(expected, tensors, upstream)
    for grad, reference, t in zip(grads, references, tensors):
        assert torch.equal(grad, reference) and grad.is_contiguous() and grad.dtype == t.dtype
    # An input that needs no gradient gets none; the others' stay right (the runs of the skipped one still count).
    frozen = [tensors[0].detach()] + list(tensors[1:])
    partial = torch.autograd.grad(concat_shuffled(frozen, groups, impl='reference'), frozen[1:], upstream)
    assert all(torch.equal(grad, reference) for grad, reference in zip(partial, references[1:]))
    with pytest.raises(ValueError, match='do not split into 4 groups'):
        concat_shuffled([torch.randn(1, 3, 2, 2), torch.randn(1, 2, 2, 2)], 4)


@pytest.mark.parametrize('tensors,groups,error,match', [
    ([torch.zeros(1, 3, 2, 2)], 0, ValueError, 'groups must be a positive int, got 0'),
    ([], 3, ValueError, 'non-empty sequence of 4-D'),
    ([torch.zeros(1, 3, 2)], 3, ValueError, r'4-D \(B, C_i, H, W\) tensors, got \[\(1, 3, 2\)\]'),
    ([torch.zeros(1, 3, 2, 2), torch.zeros(2, 3, 2, 2)], 3, ValueError, 'same batch, height, width and device'),
    ([torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, 2)], 4, ValueError, 'the 5 concatenated channels do not split')])
def test_bad_inputs(tensors, groups, error, match):
    with pytest.raises(error, match=match):
        concat_shuffled(tensors, groups)


@pytest.mark.parametrize('dtypes,expected', [((torch.float16, torch.float32), 'triton'),
                                             ((torch.float32, torch.float64), 'reference')])
def test_dispatch_where_triton_runs(dtypes, expected, monkeypatch):
    """With triton usable (as for CUDA tensors): the kernel, unless an input is outside its dtypes."""
    from sparx_mm.ops import triton_channel_shuffle
    calls = intercept_triton(monkeypatch, triton_channel_shuffle, 'concat_shuffled_triton')
    tensors = [torch.randn(2, 3, 4, 5, dtype=dtype) for dtype in dtypes]
    if expected == 'triton':
        with pytest.raises(TritonCalled):
            concat_shuffled(tensors, 3)
        assert calls[0][0] == tensors and calls[0][1] == 3
    else:
        assert torch.equal(concat_shuffled(tensors, 3), concat_shuffled_reference(tensors, 3)) and not calls


def test_triton_kernel_matches_the_definition_in_the_interpreter():
    stdout = run_in_triton_interpreter('_triton_channel_shuffle_cases.py', 600)
    assert 'FAIL' not in stdout and stdout.count('exact') == 6, stdout
    assert re.search(r'^ALL 6 CASES EXACT$', stdout, re.M), stdout
