"""Run by test_batch_norm_fold.py in a subprocess with TRITON_INTERPRET=1: the BatchNorm-folding Triton kernel
against the reference (weights of 1x1, depthwise 3x3 and strided 3x3 convolutions, with and without the conv's
bias and the BatchNorm's affine parameters, more rows than a program's block and rows longer than a chunk,
float32 / float16 / bfloat16 weights); then its custom op's registration. Prints one line per case with the
largest relative errors, then 'WORST <error>' and exits non-zero when a check fails."""
import os
import sys

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

import torch  # noqa: E402

from sparx_mm.ops import fold_batch_norm, fold_batch_norm_reference  # noqa: E402
from sparx_mm.ops import triton_batch_norm_fold as tbf  # noqa: E402

# (weight shape, conv bias, BatchNorm affine, dtype): 40 rows (three programs of 16), a 1x1 weight of 300
# elements a row (three chunks of 128), depthwise and grouped kernels.
CASES = [((40, 300, 1, 1), True, True, torch.float32), ((24, 1, 3, 3), False, True, torch.float32),
         ((17, 6, 3, 3), True, False, torch.float32), ((40, 300, 1, 1), False, True, torch.float16),
         ((33, 1, 5, 5), True, True, torch.bfloat16)]
# Relative to the largest reference value: float32 rounding, and one rounding of the output dtype (the kernel
# and the reference both compute in float32 and round once).
TOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def relative_errors(case):
    shape, has_bias, affine, dtype = case
    g = torch.Generator().manual_seed(shape[0] * 3 + shape[-1])
    cout = shape[0]
    weight = torch.randn(shape, generator=g).to(dtype)
    bias = torch.randn(cout, generator=g).to(dtype) if has_bias else None
    mean, var = torch.randn(cout, generator=g), torch.rand(cout, generator=g) * 2 + 0.01
    gamma = torch.randn(cout, generator=g) if affine else None
    beta = torch.randn(cout, generator=g) if affine else None
    folded = fold_batch_norm(weight, bias, mean, var, gamma, beta, 1e-5, impl='triton')
    expected = fold_batch_norm_reference(weight, bias, mean, var, gamma, beta, 1e-5)
    assert [t.dtype for t in folded] == [dtype, dtype] and folded[0].shape == weight.shape
    return [float((a.float() - e.float()).abs().max() / e.float().abs().max()) for a, e in zip(folded, expected)]


def check_registration():
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(6, 4, 1, 1, generator=g), torch.randn(6, generator=g), torch.randn(6, generator=g),
            torch.rand(6, generator=g) + 0.1, torch.randn(6, generator=g), torch.randn(6, generator=g), 1e-5]
    report = torch.library.opcheck(tbf._fold.op, args, test_utils=('test_schema', 'test_faketensor'))
    ok = set(report.values()) == {'SUCCESS'}
    print('OPCHECK', 'ok' if ok else report)
    return ok


if __name__ == '__main__':
    worst, ok = 0.0, True
    for case in CASES:
        errors = relative_errors(case)
        tol = TOL[case[-1]]
        passed = max(errors) <= tol
        worst, ok = max(worst, max(errors) / tol), ok and passed
        print(f'{case[0]} bias {case[1]} affine {case[2]} {str(case[3])[6:]}: weight {errors[0]:.1e} bias '
              f'{errors[1]:.1e}{"" if passed else " FAIL"}', flush=True)
    ok = check_registration() and ok
    print(f'WORST {worst:.3f} of tolerance')
    sys.exit(0 if ok else 1)
