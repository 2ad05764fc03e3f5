"""What the op tests share: running a cases script under Triton's CPU interpreter, comparing a torch.compile
capture with eager mode (in those scripts), the gradients through two outputs that share an input, and catching the
call of a Triton entry point where the dispatch would run it."""
import os
import subprocess
import sys

import torch

from sparx_mm.ops import gpu_backends

HERE = os.path.dirname(__file__)


def run_in_triton_interpreter(script: str, timeout: int = 900) -> str:
    """Run ``tests/test_ops/<script>`` in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter must be on
    before the kernels are defined), single-threaded and with the layer kernels' automatic choice; assert that
    it exited 0 and return its stdout."""
    import triton  # noqa: F401  (a dependency of torch's Linux wheels: its absence fails the calling test)
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1')
    env.pop(gpu_backends.LAYER_KERNELS_ENV, None)
    out = subprocess.run([sys.executable, os.path.join(HERE, script)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def compile_matches_eager(loss, leaves, atol: float) -> bool:
    """Whether ``loss(*leaves)`` (a scalar) traces as one graph with no breaks and its gradients under
    ``torch.compile(fullgraph=True, backend='aot_eager')`` match eager mode (rtol 1e-5, ``atol``); prints a
    COMPILE line."""
    explanation = torch._dynamo.explain(loss)(*leaves)
    compiled = torch.compile(loss, fullgraph=True, backend='aot_eager')
    grads = torch.autograd.grad(compiled(*leaves), leaves)
    eager = torch.autograd.grad(loss(*leaves), leaves)
    same = all(torch.allclose(a, b, rtol=1e-5, atol=atol) for a, b in zip(grads, eager))
    print(f'COMPILE graphs {explanation.graph_count} breaks {explanation.graph_break_count} '
          f'{"matches" if same else "DIFFERS from"} eager')
    return same and explanation.graph_count == 1 and explanation.graph_break_count == 0


class TritonCalled(Exception):
    """Raised by :func:`intercept_triton`'s stand-in instead of launching a kernel."""


def intercept_triton(monkeypatch, module, name: str) -> list:
    """Make triton usable (as for CUDA tensors), leave the layer-kernel choice automatic, and replace
    ``module.<name>`` (a Triton entry point) by a stand-in that records its arguments and raises
    :class:`TritonCalled`. Returns the list of recorded argument tuples."""
    monkeypatch.delenv(gpu_backends.LAYER_KERNELS_ENV, raising=False)
    monkeypatch.setattr(gpu_backends, 'triton_usable', lambda x: True)
    calls = []

    def stand_in(*args):
        calls.append(args)
        raise TritonCalled

    monkeypatch.setattr(module, name, stand_in)
    return calls


def backward_through_two_uses(leaves, first, second, upstream_first, upstream_second, use_first: bool,
                              use_second: bool) -> list:
    """Backpropagate ``sum(first * upstream_first)`` and / or ``sum(second * upstream_second)`` (in float32) from two
    outputs that share an input (the fused gradient sums' interpreter cases), and return the leaves' gradients as
    float32, zeros where none came."""
    loss = 0
    if use_first:
        loss = loss + (first.float() * upstream_first.float()).sum()
    if use_second:
        loss = loss + (second.float() * upstream_second.float()).sum()
    loss.backward()
    return [t.grad.float() if t.grad is not None else torch.zeros_like(t, dtype=torch.float32) for t in leaves]
