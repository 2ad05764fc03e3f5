"""GPU check of the Triton selective scan against the PyTorch reference (run on a CUDA machine).

    python tools/gpu_checks/check_kernels.py [--model]

Checks forward and every gradient on random inputs of awkward sizes (lengths that are not multiples of
the block, N > 1, two routes, L = 1) in fp32 / bf16 / fp16, then (with --model) whole SparX-Mamba outputs
and input gradients with the Triton backend against the reference backend. Prints the largest relative
errors and exits non-zero when one exceeds its tolerance.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.ops import selective_scan, selective_scan_reference  # noqa: E402

# Gradients come back in the input dtype, so bf16 / fp16 errors are their rounding (2^-8, 2^-11).
TOL = {torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}
# (batch, routes, channels per route, d_state, length)
SHAPES = [(2, 4, 16, 1, 197), (1, 4, 24, 4, 300), (3, 2, 8, 1, 128), (2, 4, 40, 1, 1), (1, 4, 96, 1, 3136),
          (2, 1, 12, 2, 129)]


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def make_inputs(batch, routes, per_route, n, length, dtype, device):
    kd = routes * per_route
    g = torch.Generator(device='cpu').manual_seed(batch * 1000 + length)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=rnd(batch, kd, length).to(device, dtype), delta=(0.5 * rnd(batch, kd, length)).to(device, dtype),
                A=(-torch.rand(kd, n, generator=g) - 0.1).to(device), B=rnd(batch, routes, n, length).to(device, dtype),
                C=rnd(batch, routes, n, length).to(device, dtype), D=rnd(kd).to(device),
                delta_bias=(0.2 * rnd(kd)).to(device))


def check_scan(device):
    worst = {}
    ok = True
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for shape in SHAPES:
            inputs = make_inputs(*shape, dtype, device)
            leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
            ref_leaves = {k: v.detach().clone().float().requires_grad_() for k, v in inputs.items()}
            y = selective_scan(**leaves, delta_softplus=True, backend='triton')
            y_ref = selective_scan_reference(**ref_leaves, delta_softplus=True)
            grad = torch.randn_like(y_ref)
            y.backward(grad)
            y_ref.backward(grad)
            errors = {'y': rel_err(y, y_ref)}
            for k in leaves:  # with L = 1 the output does not depend on A: autograd leaves its grad None
                if ref_leaves[k].grad is None:
                    ref_leaves[k].grad = torch.zeros_like(ref_leaves[k])
            errors.update({'d' + k: rel_err(leaves[k].grad, ref_leaves[k].grad) for k in leaves})
            assert y.dtype == torch.float32
            for name, err in errors.items():
                key = (str(dtype).split('.')[-1], name)
                worst[key] = max(worst.get(key, 0.0), err)
                if err > TOL[dtype]:
                    ok = False
                    print(f'FAIL {dtype} {shape} {name}: rel err {err:.2e}')
    print('largest relative errors, Triton vs reference (float32 reference on the same rounded inputs):')
    for dtype in ('float32', 'bfloat16', 'float16'):
        row = ', '.join(f'{name} {err:.1e}' for (d, name), err in sorted(worst.items()) if d == dtype)
        print(f'  {dtype}: {row}')
    return ok


def check_model(device):
    from sparx_mm.models import SparXMamba
    torch.manual_seed(0)
    model = SparXMamba('t', dmca_scale='learnable').to(device)
    ok = True
    for mode in ('eval', 'train'):
        getattr(model, mode)()
        outs, grads = {}, {}
        for backend in ('reference', 'triton'):
            os.environ['SPARX_SCAN_BACKEND'] = backend
            torch.manual_seed(1)
            x = torch.randn(2, 3, 224, 160, device=device, requires_grad=True)
            feats = model(x)
            sum(f.float().square().mean() for f in feats).backward()
            outs[backend] = [f.detach() for f in feats]
            grads[backend] = x.grad
        os.environ.pop('SPARX_SCAN_BACKEND')
        out_err = max(rel_err(a, b) for a, b in zip(outs['triton'], outs['reference']))
        grad_err = rel_err(grads['triton'], grads['reference'])
        print(f'SparX-T {mode}, 2x3x224x160: outputs rel err {out_err:.1e}, input-gradient rel err {grad_err:.1e}')
        ok &= out_err < 1e-5 and grad_err < 1e-3
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', action='store_true', help='also compare whole-model outputs')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit('check_kernels.py needs a CUDA GPU')
    device = torch.device('cuda')
    print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)
    ok = check_scan(device)
    if args.model:
        ok &= check_model(device)
    print('ALL CHECKS PASSED' if ok else 'SOME CHECKS FAILED')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
