"""Census, on the CPU, of the aten ops that the GPU code path runs around the Triton kernels, with their strides.

    python tools/analysis_tools/op_census.py --arch b --mode infer --dtype fp32
    python tools/analysis_tools/op_census.py --arch t --mode train --dtype fp16 --strided-only
    python tools/analysis_tools/op_census.py --arch t --mode train --dtype fp16 --inside-ops

The model (SparXMamba + the classification head, as benchmark.py builds it) runs on the CPU with the dispatchers
choosing their CUDA paths (``gpu_backends.triton_usable`` answers True, the channels-last runs of
``layers.FoldingSequential`` included) and every Triton launch counted instead of run (the kernels' outputs stay
uninitialised: only shapes and strides matter here). A ``TorchDispatchMode`` records every aten op outside the
Triton operators' own wrappers (``--inside-ops``: inside them too, the wrappers run as plain Python instead of as
custom ops: their copies, transposes and reductions around the kernels): its operands' shapes, dtypes and strides,
the bytes they hold and the innermost call site in ``sparx_mm`` ('backward' for the autograd engine's ops). Ops
with a non-contiguous operand ('strided') are the ones a GPU runs as strided copies or as elementwise kernels that
cannot vectorise (``elementwise_kernel<128, 2>`` (32-bit) / ``<128, 4>`` (16-bit) in a kernel profile): this finds
them without a GPU. The Triton launch counts match a CUDA run's kernel counts
at the same map sizes (map sizes pick some dispatch paths: use 224).

Prints the Triton launches by kernel, the totals (aten op calls and the bytes of their operands and outputs, all and
strided: a measure of the data the torch work between the kernels moves, to compare code versions without a GPU),
then one row per (op, strided, call site, operand shapes), largest share of bytes first.

fp16 / bf16 run under the CPU's autocast, whose dtype rules are not CUDA's: ops on the CPU's float32 list only (e.g.
``adaptive_avg_pool3d``) show casts to float32, and float32 results downstream, that a GPU does not run. Check an
op's CUDA rule before reading such a cast as GPU work (``torch._C._dispatch_dump('aten::OP')`` lists an
``AutocastCUDA`` kernel where CUDA autocast handles the op).
"""
import argparse
import collections
import contextlib
import importlib
import os
import pkgutil
import sys
import traceback
from typing import Counter, Iterator, List, Tuple

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import DTYPES, Classifier  # noqa: E402  (puts the repo root on sys.path)
from sparx_mm.models import SparXMamba, layers  # noqa: E402
from sparx_mm import ops  # noqa: E402
from sparx_mm.ops import gpu_backends, triton_op  # noqa: E402

#: Ops that move no data (views, metadata, allocation): not rows of the census.
NO_DATA_OPS = {'detach', 'view', '_unsafe_view', 't', 'empty', 'expand', 'slice', 'select', 'transpose', 'permute',
               'unsqueeze', 'squeeze', 'as_strided', 'split', 'split_with_sizes', 'empty_strided', 'alias',
               'new_empty', '_reshape_alias', 'lift_fresh', 'chunk', 'unbind', 'is_same_size', 'empty_like'}
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PACKAGE = os.path.join(_ROOT, 'sparx_mm') + os.sep

Row = Tuple[str, bool, str, str]  # (op, strided, call site, operands)


def _kernel_modules() -> list:
    """The ``sparx_mm.ops.triton_*`` modules that start their kernels through ``triton_launch.launch`` (imported by
    name, so each module's own reference is the one to replace)."""
    from sparx_mm.ops import triton_launch
    names = (info.name for info in pkgutil.iter_modules(ops.__path__) if info.name.startswith('triton_'))
    modules = [importlib.import_module(f'{ops.__name__}.{name}') for name in names]
    return [m for m in modules if m is not triton_launch and getattr(m, 'launch', None) is triton_launch.launch]


@contextlib.contextmanager
def gpu_paths_on_cpu(launches: Counter) -> Iterator[None]:
    """Within it, CPU tensors take the dispatchers' Triton paths and the GPU's channels-last runs
    (``layers.CHANNELS_LAST_DEVICES``), and each kernel launch only counts into ``launches`` (by kernel name);
    everything is restored on exit."""
    modules = _kernel_modules()
    saved = [(m, m.launch) for m in modules]
    saved_usable, saved_env = gpu_backends.triton_usable, os.environ.get('TRITON_INTERPRET')
    saved_devices = layers.CHANNELS_LAST_DEVICES

    def count(kernel, grid, *args, **kwargs):
        launches[getattr(getattr(kernel, 'fn', kernel), '__name__', str(kernel))] += 1
    try:
        gpu_backends.triton_usable = lambda x: True
        layers.CHANNELS_LAST_DEVICES = saved_devices + ('cpu', )
        os.environ['TRITON_INTERPRET'] = '1'  # the wrappers' guard accepts CPU tensors (nothing is interpreted)
        for m in modules:
            m.launch = count
        yield
    finally:
        gpu_backends.triton_usable = saved_usable
        layers.CHANNELS_LAST_DEVICES = saved_devices
        for m, launch in saved:
            m.launch = launch
        if saved_env is None:
            os.environ.pop('TRITON_INTERPRET', None)
        else:
            os.environ['TRITON_INTERPRET'] = saved_env


def _call_site() -> str:
    for frame in reversed(traceback.extract_stack()[:-3]):
        if frame.filename.startswith(_PACKAGE):
            return f'{os.path.relpath(frame.filename, _PACKAGE)}:{frame.lineno} {frame.name}'
    return 'backward'


def _operand_text(t: torch.Tensor) -> str:
    strides = '' if t.is_contiguous() else f' strides {tuple(t.stride())}'
    return f'{tuple(t.shape)} {str(t.dtype).replace("torch.", "")}{strides}'


class OpCensus(TorchDispatchMode):
    """Counts every data-moving aten op (calls and bytes of its tensor operands and outputs) by :data:`Row`."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = collections.Counter()
        self.bytes: Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.__name__.split('.')[0]
        if name in NO_DATA_OPS:
            return out
        tensors = [a for a in pytree.tree_leaves((args, kwargs, out)) if isinstance(a, torch.Tensor)]  # lists too
        strided = any(not t.is_contiguous() and t.numel() > 1 for t in tensors)
        row = (str(getattr(func, 'overloadpacket', func)), strided, _call_site(),
               ', '.join(_operand_text(t) for t in tensors[:3]))
        self.calls[row] += 1
        self.bytes[row] += sum(t.numel() * t.element_size() for t in tensors)
        return out


@contextlib.contextmanager
def wrappers_as_python() -> Iterator[None]:
    """Within it, the Triton operators run their wrappers' Python (and its autograd formula) under the census's
    dispatch mode too, where they would otherwise run as one custom op each (``triton_op.traced_call``)."""
    saved = triton_op.traced_call
    triton_op.traced_call = lambda args: False
    try:
        yield
    finally:
        triton_op.traced_call = saved


def run_census(arch: str, size: int, batch: int, mode: str, dtype: str,
               inside_ops: bool = False) -> Tuple[Counter, OpCensus]:
    """(Triton launches by kernel, the op census) of one forward pass (``mode`` 'infer', under no_grad) or one
    forward + backward pass ('train') of the classifier on random images, the CUDA paths taken on the CPU;
    ``inside_ops``: the aten ops inside the Triton operators' wrappers counted too."""
    torch.manual_seed(0)
    model = Classifier(arch).train(mode == 'train')
    images = torch.randn(batch, 3, size, size)
    launches: Counter = collections.Counter()
    census = OpCensus()
    autocast = torch.autocast('cpu', dtype=DTYPES[dtype], enabled=DTYPES[dtype] is not None)
    with gpu_paths_on_cpu(launches), wrappers_as_python() if inside_ops else contextlib.nullcontext():
        if mode == 'train':
            with census, autocast:
                loss = model(images).float().square().mean()
            with census:
                loss.backward()
        else:
            with torch.no_grad(), census, autocast:
                model(images)
    return launches, census


def format_census(launches: Counter, census: OpCensus, rows: int, strided_only: bool) -> List[str]:
    lines = ['# Triton launches: ' + ', '.join(f'{name} {n}' for name, n in launches.most_common())]
    total = sum(census.bytes.values()) or 1
    strided = [row for row in census.bytes if row[1]]
    lines.append(f'# {sum(census.calls.values())} aten op calls, {total / 1e6:.1f} MB of operands + outputs; with a '
                 f'strided operand {sum(census.calls[row] for row in strided)} calls, '
                 f'{sum(census.bytes[row] for row in strided) / 1e6:.1f} MB')
    lines.append('# aten ops, largest share of bytes (operands + outputs) first; strided: a non-contiguous operand')
    lines.append(f'{"share":>6} {"calls":>5}  {"op":<32} {"strided":<7} {"call site":<48} operands')
    shown = [row for row, _ in census.bytes.most_common() if row[1] or not strided_only][:rows]
    for row in shown:
        op, strided, site, operands = row
        lines.append(f'{100 * census.bytes[row] / total:5.1f}% {census.calls[row]:5d}  {op:<32} '
                     f'{"yes" if strided else "":<7} {site:<48} {operands}')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='t', choices=sorted(SparXMamba.arch_zoo))
    parser.add_argument('--size', type=int, default=224, help='image size (the dispatch paths depend on map sizes)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--mode', default='infer', choices=['infer', 'train'])
    parser.add_argument('--dtype', default='fp32', choices=sorted(DTYPES))
    parser.add_argument('--rows', type=int, default=40)
    parser.add_argument('--strided-only', action='store_true', help='only the ops with a non-contiguous operand')
    parser.add_argument('--inside-ops', action='store_true',
                        help="also the aten ops inside the Triton operators' wrappers (see above)")
    args = parser.parse_args(argv)
    if not gpu_backends.TRITON_INSTALLED:
        parser.error('the GPU code path imports triton: install it (nothing runs on a GPU here)')
    if args.size < 32 or args.batch < 1 or args.rows < 1:
        parser.error(f'--size must be >= 32 and --batch, --rows >= 1, got {args.size}, {args.batch}, {args.rows}')
    launches, census = run_census(args.arch, args.size, args.batch, args.mode, args.dtype, args.inside_ops)
    print(f'# SparX-{args.arch.upper()} {args.mode} {args.dtype}, batch {args.batch}, {args.size} x {args.size}: '
          'the CUDA paths on the CPU (Triton launches counted, not run)')
    print('\n'.join(format_census(launches, census, args.rows, args.strided_only)))


if __name__ == '__main__':
    main()
