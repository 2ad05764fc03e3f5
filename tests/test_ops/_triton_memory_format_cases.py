"""Run by test_memory_format.py in a subprocess with TRITON_INTERPRET=1: NCHW <-> channels-last conversion by the
transpose kernel against torch's copy, both directions, float32 / float16 / bfloat16, maps whose C and H*W are no
multiple of the 32 x 32 tiles (3 channels x 5 x 7, 40 x 9 x 11) and one of several tiles both ways; the gradient
in the input's layout (by the kernel too); the custom op's registration and a torch.compile capture. Prints one
line per check and exits non-zero when one fails."""
import os
import sys

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'
os.environ['SPARX_LAYER_KERNELS'] = 'triton'  # the kernel for CPU tensors, backward passes included

import torch  # noqa: E402

from sparx_mm.ops import convert_memory_format  # noqa: E402
from sparx_mm.ops import memory_format as mf, triton_transpose  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.test_ops.helpers import compile_matches_eager  # noqa: E402

SHAPES = [(2, 3, 5, 7), (1, 40, 9, 11), (2, 70, 6, 8)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FORMATS = {'channels_last': torch.channels_last, 'nchw': torch.contiguous_format}


def check_conversions() -> bool:
    ok = True
    g = torch.Generator().manual_seed(0)
    for shape in SHAPES:
        for dtype in DTYPES:
            for name, target in FORMATS.items():
                source = torch.contiguous_format if target == torch.channels_last else torch.channels_last
                x = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=source).requires_grad_()
                assert mf._use_kernel(x, target, None), (shape, dtype, name)
                y = convert_memory_format(x, target)
                grad = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=target)
                y.backward(grad)
                passed = (torch.equal(y, x) and y.is_contiguous(memory_format=target)
                          and torch.equal(x.grad, grad) and x.grad.is_contiguous(memory_format=source))
                ok = ok and passed
                print(f'{shape} {str(dtype)[6:]} -> {name}: {"exact" if passed else "FAIL"}', flush=True)
    return ok


def check_registration() -> bool:
    x = torch.randn(2, 5, 3, 4)
    report = torch.library.opcheck(triton_transpose.layout_transpose.op, [x.requires_grad_(), True])
    back = torch.library.opcheck(triton_transpose.layout_transpose.op,
                                 [x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(), False])
    ok = set(report.values()) == {'SUCCESS'} and set(back.values()) == {'SUCCESS'}
    print('OPCHECK', 'ok' if ok else (report, back))
    return ok


def check_compile() -> bool:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 5, 4, generator=g).requires_grad_()
    weight = torch.randn(6, 6, 3, 3, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()

    def loss(x, weight):
        y = torch.nn.functional.conv2d(convert_memory_format(x, torch.channels_last), weight, padding=1)
        return (convert_memory_format(y, torch.contiguous_format) ** 2).sum()
    return compile_matches_eager(loss, [x, weight], atol=1e-4)


if __name__ == '__main__':
    results = [check_conversions(), check_registration(), check_compile()]
    sys.exit(0 if all(results) else 1)
