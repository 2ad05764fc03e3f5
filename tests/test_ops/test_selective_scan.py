import pytest
import torch
import torch.nn.functional as F

from sparx_mm.ops import (available_scan_backends, register_scan_backend,
                          selective_scan, selective_scan_reference)
# ``sparx_mm.ops.selective_scan`` the attribute is the function; ``from``
# imports of the dotted name still reach the module.
from sparx_mm.ops.selective_scan import (_BACKENDS, SCAN_BACKEND_ENV,
                                         unregister_scan_backend)


def naive_scan(u, delta, A, B, C, D=None, delta_bias=None,
               delta_softplus=True):
    """Step-by-step recurrence in float64, the definition of the op."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, kd, length = u.shape
    groups = B.shape[1]
    # channel d reads group d // (KD // K)
    B = B.repeat_interleave(kd // groups, dim=1)  # (batch, KD, N, L)
    C = C.repeat_interleave(kd // groups, dim=1)
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(batch, kd, A.shape[1])
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[..., t] * u[:, :, t, None]
        y = (C[..., t] * h).sum(-1)
        if D is not None:
            y = y + D.double() * u[:, :, t]
        ys.append(y)
    return torch.stack(ys, dim=-1)


def make_inputs(batch=2, kd=8, groups=4, d_state=4, length=7,
                dtype=torch.float32, with_d=True, with_bias=True,
                softplus=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    u = rand(batch, kd, length)
    if softplus:
        delta = rand(batch, kd, length) * 0.5
    else:  # without softplus the step must already be positive
        delta = rand(batch, kd, length).abs() * 0.5 + 0.01
    A = -torch.exp(rand(kd, d_state) * 0.5)
    B = rand(batch, groups, d_state, length)
    C = rand(batch, groups, d_state, length)
    D = rand(kd) if with_d else None
    bias = rand(kd) * 0.1 if with_bias else None
    cast = [t.to(dtype) if t is not None else None
            for t in (u, delta, A, B, C, D, bias)]
    return cast


def rel_err(out, ref):
    return ((out.double() - ref).abs().max() /
            ref.abs().max().clamp_min(1e-12)).item()


# ---------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('length', [1, 7, 64, 197])
@pytest.mark.parametrize('d_state', [1, 4])
@pytest.mark.parametrize('with_d,with_bias,softplus', [
    (True, True, True),
    (False, False, True),
    (True, False, False),
    (False, True, False),
])
def test_reference_matches_naive(length, d_state, with_d, with_bias,
                                 softplus):
    u, delta, A, B, C, D, bias = make_inputs(
        d_state=d_state, length=length, with_d=with_d, with_bias=with_bias,
        softplus=softplus)
    out = selective_scan_reference(u, delta, A, B, C, D, bias, softplus)
    ref = naive_scan(u, delta, A, B, C, D, bias, softplus)
    assert out.dtype == torch.float32
    assert out.shape == u.shape
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize('kd,groups', [(4, 1), (12, 3), (8, 8)])
def test_reference_group_layouts(kd, groups):
    u, delta, A, B, C, D, bias = make_inputs(kd=kd, groups=groups,
                                             length=33)
    out = selective_scan_reference(u, delta, A, B, C, D, bias)
    assert rel_err(out, naive_scan(u, delta, A, B, C, D, bias)) <= 1e-5


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_float32(dtype):
    low = make_inputs(length=64, dtype=dtype)
    out = selective_scan_reference(*low)
    assert out.dtype == torch.float32
    # The same (already rounded) values in float32 must give the same result:
    # the op promotes before doing any arithmetic.
    as_f32 = [t.float() for t in low]
    torch.testing.assert_close(out, selective_scan_reference(*as_f32))
    # and it stays close to the full-precision computation.
    full = make_inputs(length=64, dtype=torch.float32)
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    assert rel_err(out, naive_scan(*full)) <= tol


def test_float64_stays_float64():
    out = selective_scan_reference(*make_inputs(dtype=torch.float64))
    assert out.dtype == torch.float64


def test_long_sequence_is_stable():
    # Strong decay over a long sequence: cumulative products underflow to 0,
    # which must not produce inf / nan.
    u, delta, A, B, C, D, bias = make_inputs(batch=1, kd=4, groups=2,
                                             length=3000)
    A = A * 50
    out = selective_scan_reference(u, delta, A, B, C, D, bias)
    assert torch.isfinite(out).all()
    assert rel_err(out, naive_scan(u, delta, A, B, C, D, bias)) <= 1e-5


@pytest.mark.parametrize('softplus', [True, False])
def test_gradcheck(softplus):
    inputs = make_inputs(batch=2, kd=4, groups=2, d_state=3, length=6,
                         dtype=torch.float64, softplus=softplus)
    inputs = [t.requires_grad_() for t in inputs]

    def fn(u, delta, A, B, C, D, bias):
        return selective_scan_reference(u, delta, A, B, C, D, bias, softplus)

    assert torch.autograd.gradcheck(fn, inputs)


def test_gradcheck_through_dispatch_without_optionals():
    u, delta, A, B, C, _, _ = make_inputs(batch=1, kd=2, groups=1,
                                          d_state=2, length=5,
                                          dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (u, delta, A, B, C)]
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan(*a, backend='reference'), inputs)


# ---------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------
@pytest.fixture
def clean_registry(monkeypatch):
    """Restore the backend registry and unset the env var around a test."""
    monkeypatch.delenv(SCAN_BACKEND_ENV, raising=False)
    saved = dict(_BACKENDS)
    yield
    _BACKENDS.clear()
    _BACKENDS.update(saved)


def _tagged_backend(tag, calls):

    def fn(u, delta, A, B, C, D, delta_bias, delta_softplus):
        calls.append(tag)
        return selective_scan_reference(u, delta, A, B, C, D, delta_bias,
                                        delta_softplus)

    return fn


def test_default_is_reference_on_cpu(clean_registry):
    inputs = make_inputs()
    assert available_scan_backends()[-1] == 'reference'
    assert available_scan_backends(inputs[0])[0] == 'reference'
    torch.testing.assert_close(
        selective_scan(*inputs), selective_scan_reference(*inputs))


def test_fake_gpu_backend_not_chosen_on_cpu(clean_registry):
    calls = []
    register_scan_backend('fake_cuda', _tagged_backend('fake_cuda', calls),
                          is_available=lambda u: u.is_cuda, priority=100)
    inputs = make_inputs()
    names = available_scan_backends()
    assert names[0] == 'fake_cuda' and names[-1] == 'reference'
    assert 'fake_cuda' not in available_scan_backends(inputs[0])
    selective_scan(*inputs)
    assert calls == []
    with pytest.raises(RuntimeError, match="'fake_cuda'.*not available"):
        selective_scan(*inputs, backend='fake_cuda')


def test_priority_and_forcing(clean_registry, monkeypatch):
    calls = []
    register_scan_backend('low', _tagged_backend('low', calls), priority=1)
    register_scan_backend('high', _tagged_backend('high', calls),
                          priority=5)
    inputs = make_inputs()
    selective_scan(*inputs)
    assert calls == ['high']

    monkeypatch.setenv(SCAN_BACKEND_ENV, 'low')
    selective_scan(*inputs)
    assert calls == ['high', 'low']

    # the argument wins over the environment
    out = selective_scan(*inputs, backend='reference')
    assert calls == ['high', 'low']
    torch.testing.assert_close(out, selective_scan_reference(*inputs))

    monkeypatch.setenv(SCAN_BACKEND_ENV, 'nope')
    with pytest.raises(ValueError, match=SCAN_BACKEND_ENV):
        selective_scan(*inputs)


def test_env_forces_unavailable_backend(clean_registry, monkeypatch):
    register_scan_backend('fake_cuda', selective_scan_reference,
                          is_available=lambda u: False, priority=100)
    monkeypatch.setenv(SCAN_BACKEND_ENV, 'fake_cuda')
    with pytest.raises(RuntimeError, match='not available'):
        selective_scan(*make_inputs())


def test_unknown_backend(clean_registry):
    with pytest.raises(ValueError,
                       match="unknown scan backend 'no_such_backend'.*reference"):
        selective_scan(*make_inputs(), backend='no_such_backend')


def test_register_duplicate_and_unregister(clean_registry):
    with pytest.raises(ValueError, match='already registered'):
        register_scan_backend('reference', selective_scan_reference)
    register_scan_backend('extra', selective_scan_reference)
    assert 'extra' in available_scan_backends()
    unregister_scan_backend('extra')
    assert 'extra' not in available_scan_backends()
    with pytest.raises(TypeError, match='callable'):
        register_scan_backend('bad', None)


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------
def _replace(index, value, **kw):
    args = list(make_inputs(**kw))
    args[index] = value
    return args


# index in (u, delta, A, B, C, D, delta_bias)
@pytest.mark.parametrize('index,value,error,match', [
    (0, torch.randn(2, 8), ValueError, r'u must be 3-D'),
    (1, torch.randn(2, 8, 6), ValueError, r'delta must have the shape of u'),
    (2, torch.randn(8), ValueError, r'A must be 2-D \(KD, N\)'),
    (2, torch.randn(6, 4), ValueError, r'A must be 2-D \(KD, N\) with KD=8'),
    (2, torch.randn(8, 0), ValueError, r'state size N >= 1'),
    (3, torch.randn(2, 4, 4), ValueError, r'B must be 4-D'),
    (3, torch.randn(3, 4, 4, 7), ValueError, r'B batch size 3'),
    (4, torch.randn(2, 4, 3, 7), ValueError, r'C state size 3'),
    (3, torch.randn(2, 4, 4, 5), ValueError, r'B sequence length 5'),
    (4, torch.randn(2, 2, 4, 7), ValueError, r'B and C must have the same'),
    (5, torch.randn(7), ValueError, r'D must have shape \(KD,\)'),
    (6, torch.randn(8, 1), ValueError, r'delta_bias must have shape'),
    (0, torch.ones(2, 8, 7, dtype=torch.long), TypeError,
     r'u must have a floating-point dtype'),
    (2, torch.ones(8, 4, dtype=torch.int32), TypeError,
     r'A must have a floating-point dtype'),
    (4, [1.0], TypeError, r'C must be a torch.Tensor'),
    (6, 0.5, TypeError, r'delta_bias must be a torch.Tensor or None'),
])
def test_validation(index, value, error, match):
    args = _replace(index, value)
    with pytest.raises(error, match=match):
        selective_scan_reference(*args)
    with pytest.raises(error, match=match):
        selective_scan(*args)


def test_groups_must_divide_channels():
    u, delta, A, _, _, D, bias = make_inputs(kd=8)
    B = C = torch.randn(2, 3, 4, 7)
    with pytest.raises(ValueError, match=r'K=3 .*divide .*KD=8'):
        selective_scan_reference(u, delta, A, B, C, D, bias)


def test_devices_must_match():
    u, delta, A, B, C, D, bias = make_inputs()
    with pytest.raises(ValueError, match=r'same device.*A: meta'):
        selective_scan_reference(u, delta, A.to('meta'), B, C, D, bias)
