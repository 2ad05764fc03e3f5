"""Top CUDA kernels of one SparX-Mamba forward (or training step) under torch.profiler, or the forward pass's GPU
time by module.

    python tools/gpu_checks/profile_model.py --arch t --batch 128 --dtype fp32 [--train]
    python tools/gpu_checks/profile_model.py --arch t --batch 128 --dtype fp32 --by-module
    python tools/gpu_checks/profile_model.py --arch t --batch 128 --dtype fp16 --train --by-site

``--by-module``: the GPU time of the kernels launched inside each part of the model during one forward pass
(inference, or a training forward with ``--train``), summed over the stage's blocks: per stage, each block part
(the positional conv, the norms, the DMCA and its parts, SS2D's in_proj / depthwise conv / scan core / out_norm /
out_proj, the FFN's convs), the stem, the downsampling layers and the head. Kernel time, not wall time, so the
host's pace does not enter it. ``scan core`` is SS2D's own work outside its submodules (the x_proj GEMM, the
fused scan kernel, the plane transposes).

``--by-site``: the aten ops' own GPU time in one step (a training step with ``--train``: forward and backward), by
(op, call site, the first two inputs' shapes): the call site is the innermost ``sparx_mm`` frame of the op's
Python stack (or of an enclosing op's), else the autograd node that ran it in the backward pass
('backward: ConvolutionBackward0'; a custom operator's own backward: 'backward: sparx_mm_..._fwdBackward'), else
'?'. What finds the torch work between the Triton kernels (strided copies, reductions, cuDNN's convolutions) and
where it comes from; the Triton kernels themselves, launched through the driver API, are not linked to the ops
(see :func:`gpu_time_by_range`) and are left out. CPU time with ``--device cpu``.
"""
import argparse
import collections
import os
import re
import sys

import torch
from torch.autograd import DeviceType
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

_TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_TOOLS, 'analysis_tools'))
from benchmark import DTYPES, Classifier, autocast_for, synchronize  # noqa: E402  (also puts the repo root on sys.path)

# Parts timed by --by-module: module names below a block (or the model) that get a profiler range of their own.
BLOCK_PARTS = ('pos_embed', 'norm', 'dmca', 'dmca.shortcut_norm', 'dmca.shortcut_proj', 'dmca.q', 'dmca.k', 'dmca.v',
               'dmca.fuse', 'op', 'op.in_proj', 'op.conv2d', 'op.out_norm', 'op.out_proj', 'norm2', 'mlp', 'mlp.fc1',
               'mlp.dwconv', 'mlp.fc2')
_BLOCK = re.compile(r'^backbone\.layers\.(\d+)\.blocks\.\d+\.(.+)$')
_DOWNSAMPLE = re.compile(r'^backbone\.layers\.(\d+)\.downsample$')


def part_name(module_name: str):
    """The --by-module row a module's kernels count to ('stage 2 op.in_proj', 'stem', ...), or None."""
    block = _BLOCK.match(module_name)
    if block:
        return f'stage {int(block.group(1)) + 1} {block.group(2)}' if block.group(2) in BLOCK_PARTS else None
    downsample = _DOWNSAMPLE.match(module_name)
    if downsample:
        return f'downsample {int(downsample.group(1)) + 1} -> {int(downsample.group(1)) + 2}'
    return {'backbone.patch_embed': 'stem', 'norm': 'head', 'fc': 'head'}.get(module_name)


def annotate(model):
    """Give each module that part_name names a profiler range around its forward (forward hooks)."""
    open_ranges = []

    def enter(name):
        def hook(module, args):
            open_ranges.append(record_function(name).__enter__())
        return hook

    def leave(module, args, output):
        open_ranges.pop().__exit__(None, None, None)

    names = []
    for module_name, module in model.named_modules():
        name = part_name(module_name)
        if name is not None and not isinstance(module, torch.nn.Identity):
            module.register_forward_pre_hook(enter(name))
            module.register_forward_hook(leave)
            names.append(name)
    return list(dict.fromkeys(names))


FORWARD = 'whole forward'


def _model_order(name: str):
    """Sort key of part_name's names: the stem, then each stage's block parts (BLOCK_PARTS' order) and its
    downsampling, then the head."""
    if name == 'stem':
        return (0, )
    if name == 'head':
        return (99, )
    kind, stage, rest = name.split(' ', 2)
    return (int(stage), 1) if kind == 'downsample' else (int(stage), 0, BLOCK_PARTS.index(rest))


def gpu_time_by_range(events, wanted):
    """({range name: us of GPU work launched directly inside it}, us of all GPU work) from a CUDA profile's events.

    Each GPU activity (kernel, copy) counts to the innermost range whose GPU-side span (the profiler's device-side
    event of the range's name) holds its start; spans of nested ranges nest, so that is the last one opened.
    Summing durations, not span lengths, leaves the GPU's idle gaps out. Why not the host-side events'
    ``device_time_total``: it links only kernels launched through the CUDA runtime to host ops, not those that
    Triton's launcher starts through the driver API (on an H200, 19.7 of ~56 ms of a SparX-T forward pass came out
    that way). Work outside every span counts to the total only (on an H200, SparX-T fp32: the parts held 51.93 of
    the pass's 52.17 ms)."""
    device = [e for e in events if e.device_type == DeviceType.CUDA]
    spans = sorted((e.time_range.start, -e.time_range.end, e.name) for e in device if e.name in wanted)
    activity = sorted((e.time_range.start, e.time_range.elapsed_us()) for e in device if e.name not in wanted)
    own, total, open_spans, next_span = collections.Counter(), 0.0, [], 0
    for start, duration in activity:
        while next_span < len(spans) and spans[next_span][0] <= start:
            span_start, neg_end, name = spans[next_span]
            while open_spans and open_spans[-1][0] <= span_start:  # ended before this one opened
                open_spans.pop()
            open_spans.append((-neg_end, name))
            next_span += 1
        while open_spans and open_spans[-1][0] <= start:
            open_spans.pop()
        if open_spans:
            own[open_spans[-1][1]] += duration
        total += duration
    return own, total


def by_module_table(prof, names, on_gpu=True):
    """Rows (name, calls, ms) in model order, the first the whole forward pass; a part's children also count to
    the part ('stage 1 op' includes 'stage 1 op.in_proj'), plus a 'scan core' row per stage: SS2D's own work
    outside its submodules. GPU time (:func:`gpu_time_by_range`), or with ``on_gpu=False`` the ranges' CPU time.
    ``calls``: the host-side ranges, one a module call."""
    wanted = set(names) | {FORWARD}
    events = prof.events()
    calls = collections.Counter(e.name for e in events if e.name in wanted and e.device_type == DeviceType.CPU)
    if on_gpu:
        own, total = gpu_time_by_range(events, wanted)
        ms = {name: sum(us for other, us in own.items() if other == name or other.startswith(name + '.')) / 1e3
              for name in calls}
        ms[FORWARD] = total / 1e3
    else:
        ms = collections.Counter()
        for e in events:
            if e.name in wanted and e.device_type == DeviceType.CPU:
                ms[e.name] += e.cpu_time_total / 1e3
    rows = [(FORWARD, calls[FORWARD], ms[FORWARD])]
    for name in sorted(names, key=_model_order):
        if name not in calls:
            continue
        rows.append((name, calls[name], ms[name]))
        if name.endswith(' op'):
            children = sum(v for k, v in ms.items() if k.startswith(name + '.'))
            rows.append((name[:-2] + 'scan core', calls[name], ms[name] - children))
    return rows


_BACKWARD_NODE = 'autograd::engine::evaluate_function: '


_PACKAGE_FRAME = re.compile(r'sparx_mm/(.+\.py\(\d+\): .+)$')


def call_site(event) -> str:
    """--by-site's call site of a profiler event (module doc): the Python frames are the event's stack (torch
    versions that record one) or its enclosing events (those that record Python calls as events)."""
    node = event
    while node is not None:
        for frame in list(node.stack or []) + [node.name]:
            match = _PACKAGE_FRAME.search(frame.replace(os.sep, '/'))
            if match:
                return match.group(1)
        if node.name.startswith(_BACKWARD_NODE):
            return 'backward: ' + node.name[len(_BACKWARD_NODE):]
        node = node.cpu_parent
    return '?'


def by_site_table(prof, on_gpu=True):
    """Rows (ms, calls, op, call site, input shapes) of the aten ops' own time (GPU time of the kernels they
    launched, or CPU time), largest first (module doc)."""
    totals = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type != DeviceType.CPU or not e.name.startswith('aten::'):
            continue
        us = e.self_device_time_total if on_gpu else e.self_cpu_time_total
        if us <= 0:
            continue
        key = (e.name, call_site(e), str(list(e.input_shapes[:2])) if e.input_shapes else '')
        totals[key][0] += us
        totals[key][1] += 1
    rows = [(us / 1e3, calls, *key) for key, (us, calls) in totals.items()]
    return sorted(rows, key=lambda row: -row[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='t')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--dtype', default='fp32', choices=sorted(DTYPES))
    parser.add_argument('--train', action='store_true')
    parser.add_argument('--by-module', action='store_true', help='GPU time of the forward pass by module')
    parser.add_argument('--by-site', action='store_true', help="the aten ops' GPU time by call site (see above)")
    parser.add_argument('--device', default='cuda', help='cuda, or cpu (--by-module, --by-site: CPU time)')
    parser.add_argument('--rows', type=int, default=25)
    parser.add_argument('--name-width', type=int, default=70, help='characters of each kernel name shown')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.by_module and args.by_site:
        parser.error('--by-module and --by-site are two different tables: choose one')
    if device.type != 'cuda' and not (args.by_module or args.by_site):
        parser.error(f'the kernel table needs a CUDA device, got --device {args.device} (--by-module and --by-site '
                     'run on the CPU)')
    model = Classifier(args.arch).to(device).train(args.train)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def step(backward=args.train):
        with autocast_for(device, args.dtype), torch.set_grad_enabled(args.train):
            out = model(x)
        if backward:
            out.float().sum().backward()

    for _ in range(2):
        step()
    synchronize(device)
    on_gpu = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    if args.by_site:
        with profile(activities=activities, with_stack=True, record_shapes=True) as prof:
            step()
            synchronize(device)
        rows = by_site_table(prof, on_gpu)
        print(f'# SparX-{args.arch.upper()} {"training step" if args.train else "inference"}, batch {args.batch}, '
              f'{args.size} x {args.size}, {args.dtype}, {device.type}: aten ops\' own '
              + ('GPU' if on_gpu else 'CPU') + f' time by call site, {sum(r[0] for r in rows):.2f} ms in all')
        print(f'{"ms":>8} {"calls":>5}  {"op":<30} {"call site":<60} input shapes')
        for ms, calls, op, site, shapes in rows[:args.rows]:
            print(f'{ms:>8.3f} {calls:>5}  {op:<30} {site[:60]:<60} {shapes}')
        return
    if not args.by_module:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            synchronize(device)
        print(prof.key_averages().table(sort_by='cuda_time_total', row_limit=args.rows,
                                        max_name_column_width=args.name_width))
        return
    names = annotate(model)
    with profile(activities=activities) as prof:
        with record_function(FORWARD):
            step(backward=False)
        synchronize(device)
    rows = by_module_table(prof, names, on_gpu=on_gpu)
    total = rows[0][2]
    print(f'# SparX-{args.arch.upper()} {"training" if args.train else "inference"} forward, batch {args.batch}, '
          f'{args.size} x {args.size}, {args.dtype}, {device.type}: ms of '
          + ('GPU kernels' if device.type == 'cuda' else 'CPU time') + ' inside each part')
    print(f'{"part":<32} {"calls":>5} {"ms":>8} {"share":>6}')
    for name, count, ms in rows:
        print(f'{name:<32} {count:>5} {ms:>8.2f} {ms / total:>6.1%}')


if __name__ == '__main__':
    main()
