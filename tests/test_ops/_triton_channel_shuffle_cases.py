"""Run by test_channel_shuffle.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter must be on
before the kernels are defined): concat_shuffled's Triton kernel against the definition (shuffle_groups of the
concatenation), values and each input's gradient bit for bit (a copy), their dtypes and contiguity. Prints one line
a case, then ``ALL <n> CASES EXACT``; exits non-zero when a case differs."""
import os
import sys

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

import torch  # noqa: E402

from sparx_mm.ops import concat_shuffled, concat_shuffled_reference  # noqa: E402
from sparx_mm.ops import triton_channel_shuffle as tcs  # noqa: E402

# Small tiles: several row blocks and column blocks a launch in the interpreter.
tcs.TILING = (64, 4, 16)

# (channels, groups, H, W, dtypes, frozen input): SparX-T's stage-3 DMCA (scaled down: 3 x 20 channels, 14 x 14
# planes over two column blocks); blocks that do not divide by the groups; two blocks (the concat aggregator);
# mixed dtypes (torch.cat's promotion, each gradient in its input's dtype); a 1 x 1 map; an input without a gradient.
CASES = [([20, 20, 20], 3, 14, 14, (torch.float16,) * 3, None), ([7, 7, 7], 3, 5, 3, (torch.float32,) * 3, None),
         ([6, 6], 2, 4, 7, (torch.bfloat16,) * 2, None), ([3, 9], 3, 2, 5, (torch.float16, torch.float32), None),
         ([1, 2, 3, 6], 4, 1, 1, (torch.float32,) * 4, None), ([4, 4, 4], 3, 3, 3, (torch.float32,) * 3, 1)]


def run(channels, groups, h, w, dtypes, frozen):
    g = torch.Generator().manual_seed(sum(channels) + groups)
    tensors = [torch.randn(2, c, h, w, generator=g).to(dtype).requires_grad_(i != frozen)
               for i, (c, dtype) in enumerate(zip(channels, dtypes))]
    out = concat_shuffled(tensors, groups, impl='triton')
    expected = concat_shuffled_reference(tensors, groups)
    upstream = torch.randn(out.shape, generator=g).to(out.dtype)
    wanted = [t for t in tensors if t.requires_grad]
    grads = torch.autograd.grad(out, wanted, upstream)
    references = torch.autograd.grad(expected, wanted, upstream)
    return (out.dtype == expected.dtype and torch.equal(out, expected)
            and all(torch.equal(a, e) and a.dtype == t.dtype and a.is_contiguous()
                    for a, e, t in zip(grads, references, wanted)))


if __name__ == '__main__':
    exact = 0
    for case in CASES:
        ok = run(*case)
        exact += ok
        print(case[:4], [str(d)[6:] for d in case[4]], 'frozen', case[5], 'exact' if ok else 'FAIL', flush=True)
    print(f'ALL {exact} CASES EXACT' if exact == len(CASES) else f'FAIL: {len(CASES) - exact} cases differ')
    sys.exit(0 if exact == len(CASES) else 1)
