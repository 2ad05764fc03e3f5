"""What the op tests share: running a cases script under Triton's CPU interpreter, comparing a torch.compile
capture with eager mode (in those scripts), and catching the call of a Triton entry point where the dispatch
would run it."""
import os
import subprocess
import sys

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
    import torch
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


def hopper_ptx(kernel, arg_types: dict, constexprs: dict, multiples_of_16=(), num_warps: int = 4,
               num_stages: int = 3) -> str:
    """The PTX of a Triton ``kernel`` compiled for sm_90 (H100 / H200) on this machine: no GPU is needed, only
    triton's bundled ptxas. ``arg_types``: each runtime argument's Triton type ('*fp32', 'i32', ...) in order;
    ``constexprs``: the constexpr values; ``multiples_of_16``: the names of the arguments the launch would find
    divisible by 16 (pointers: 16-byte aligned), as Triton's specialisation marks them."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as triton_compile
    signature = dict(arg_types, **{name: 'constexpr' for name in constexprs})
    names = list(kernel.arg_names)
    attrs = {(names.index(name), ): [['tt.divisibility', 16]] for name in multiples_of_16}
    source = ASTSource(kernel, signature, constexprs, attrs)
    compiled = triton_compile(source, target=GPUTarget('cuda', 90, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    return compiled.asm['ptx']


def global_copies(ptx: str) -> dict:
    """Counts of the PTX's global-memory loads, stores and asynchronous copies to shared memory, by width:
    {'ld.global.b32': 12, 'ld.global.v4.b32': 8, 'cp.async 16': 36, ...}."""
    import collections
    import re
    counts = collections.Counter(re.findall(r'\b((?:ld|st)\.global(?:\.[a-z0-9]+)*)', ptx))
    for size in re.findall(r'cp\.async\.c[ag]\.shared\.global(?:\.[a-z0-9]+)* \[[^]]*\], \[[^]]*\], (\w+)', ptx):
        counts[f'cp.async {int(size, 0)}'] += 1
    return dict(counts)
