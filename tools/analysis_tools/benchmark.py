"""Throughput, latency and peak memory of SparX-Mamba backbones (with the classification head).

    python tools/analysis_tools/benchmark.py --arch t --batch 1 --size 224 --device cpu
    python tools/analysis_tools/benchmark.py --arch t s b --batch 128 --dtype fp32 fp16 --mode infer train
    python tools/analysis_tools/benchmark.py --arch t s b --batch 128 --dtype fp32 fp16 --mode infer train --cuda-graph

Inference is timed under torch.inference_mode(); training times forward + backward + AdamW step on random
labels (``--optimizer``: torch's default AdamW, a loop of multi-tensor kernels launched from the host each step,
or ``AdamW(fused=True)``, one kernel a step: the same update). fp16 / bf16 run under autocast
(the scan keeps a float32 state). Prints one row per setting. A setting that runs out of memory says so in its
row; one that fails otherwise (a CUDA graph capture, a kernel) prints its traceback, whole exception chain
included, on stderr and ``failed`` with the error in its row; the table goes on either way, and failures make the
exit status 1 at the end.

``--cuda-graph`` (CUDA only) replays the model's kernels from a CUDA graph instead of launching them from Python:
inference replays one captured forward pass; training replays the model's forward and backward passes
(``torch.cuda.make_graphed_callables``), the loss, the gradient scaler and the AdamW step staying eager. The same
kernels on the same inputs (``check_kernels.py --only graph``: bit-identical outputs and gradients), so the figure
is the GPU's pace with the host's share taken out: what a fixed-shape deployment or training loop that graphs
its model gets, and a figure that the lent machines' differing hosts do not move. ``peak GB`` is then the whole
run's peak, the capture included (a graph keeps its tensors in a pool of its own); without graphs, the timed
steps' peak.

``host ms``: the time until the forward (and, training, the backward) call returned, before anything waited for
the GPU (GradScaler's step does: it reads whether the gradients overflowed). On CUDA, near ``ms/iter`` it means
that the host (Python, kernel launches) set the pace, or that the queue of launches was full; well under it,
the GPU did. On the CPU nothing runs ahead: the two differ by the optimizer step (training) alone.
"""
import argparse
import contextlib
import json
import os
import resource
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.models import SparXMamba  # noqa: E402
from sparx_mm.models.layers import unfolded  # noqa: E402

DTYPES = dict(fp32=None, fp16=torch.float16, bf16=torch.bfloat16)


class Classifier(torch.nn.Module):
    """SparXMamba + the official head (GroupNorm, mean pool, Linear), without mmpretrain's overhead."""

    def __init__(self, arch, num_classes=1000, **backbone_options):
        super().__init__()
        self.backbone = SparXMamba(arch, out_indices=(3, ), out_norm=None, **backbone_options)
        width = self.backbone.dims[-1]
        self.norm = torch.nn.GroupNorm(1, width)
        self.fc = torch.nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.norm(self.backbone(x)[-1]).mean((2, 3)))


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def autocast_for(device, dtype, cache=True):
    """Autocast to ``dtype`` (a key of DTYPES; fp32: disabled). ``cache=False`` for CUDA graph capture, which does
    not support autocast's cache of cast weights (torch.cuda.make_graphed_callables' rule)."""
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=DTYPES[dtype] is not None, cache_enabled=cache)


def graph_inference(model, x, dtype):
    """Capture one inference pass of ``model`` on ``x`` in a CUDA graph; returns (replay, output) where
    ``replay()`` reruns the captured kernels on whatever ``x`` holds, writing into ``output``."""
    def forward():
        with torch.inference_mode(), autocast_for(x.device, dtype, cache=False):
            return model(x)

    side = torch.cuda.Stream(x.device)  # warm up (compile the Triton kernels, pick cuDNN's) off the capture
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(3):
            forward()
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = forward()
    return graph.replay, output


class _AutocastForward(torch.nn.Module):
    """``module`` with autocast to ``dtype`` (weight-cast cache off) inside its forward: captured by
    torch.cuda.make_graphed_callables outside autocast, the graph of its backward pass runs the backward kernels
    eager mode runs, since eager training calls backward() outside autocast (PyTorch's rule)."""

    def __init__(self, module, dtype):
        super().__init__()
        self.module = module
        self.dtype = dtype
        self.train(module.training)

    def forward(self, x):
        with autocast_for(x.device, self.dtype, cache=False):
            return self.module(x)


def graph_training(model, x, dtype):
    """``model`` (in training mode) with its forward and backward passes replayed from CUDA graphs
    (``torch.cuda.make_graphed_callables``; the forward pass under the autocast of ``dtype``, the backward pass
    outside it, as in eager mode); returns a module with ``model``'s parameters whose forward takes tensors
    shaped like ``x``."""
    return torch.cuda.make_graphed_callables(_AutocastForward(model, dtype), (x, ), num_warmup_iters=3)


#: --optimizer choices: the AdamW keyword arguments they add.
OPTIMIZERS = {'adamw': {}, 'adamw-fused': dict(fused=True)}


def measure(arch, batch, size, device, dtype, mode, warmup, iters, compile_model=False, channels_last=False,
            backbone_options=None, cuda_graph=False, optimizer='adamw'):
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    model = Classifier(arch, **(backbone_options or {})).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    if compile_model:
        model = torch.compile(model)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    autocast = autocast_for(device, dtype, cache=not cuda_graph)
    if mode == 'train':
        model.train()
        if cuda_graph:
            model = graph_training(model, x, dtype)
        labels = torch.randint(0, 1000, (batch, ), device=device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **OPTIMIZERS[optimizer])
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == 'fp16')

        def step():
            """One training step; returns the time at which the forward and backward calls had returned."""
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x), labels)
            scaler.scale(loss).backward()
            issued = time.perf_counter()
            scaler.step(opt)
            scaler.update()
            return issued
    elif cuda_graph:
        replay, _ = graph_inference(model.eval(), x, dtype)

        def step():
            replay()
            return time.perf_counter()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                model(x)
            return time.perf_counter()

    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == 'cuda' and not cuda_graph:
        # The steady state's peak. A graph's tensors live in its private pool from the capture on, where they
        # were allocated, so with CUDA graphs the peak is the whole run's (capture included).
        torch.cuda.reset_peak_memory_stats(device)
    times, host_times = [], []
    for _ in range(iters):
        start = time.perf_counter()
        issued = step()
        synchronize(device)
        times.append(time.perf_counter() - start)
        host_times.append(issued - start)
    median = _median(times)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS
    return dict(arch=arch, mode=mode, dtype=dtype, batch=batch, size=size, ms=median * 1e3,
                img_s=batch / median, peak_gb=peak, host_ms=_median(host_times) * 1e3)


def _median(values):
    return sorted(values)[len(values) // 2]


def add_backbone_options(parser):
    parser.add_argument('--backbone-options', default='{}', metavar='JSON',
                        help='SparXMamba keyword arguments as a JSON object, e.g. '
                             '\'{"ffn_recompute": false, "norm_recompute": false}\'')


def parse_backbone_options(parser, text: str, arch: str) -> dict:
    """``--backbone-options`` as keyword arguments, checked by building the backbone once; else a usage error."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        parser.error(f'--backbone-options must be a JSON object, got {text!r} ({error})')
    if not isinstance(options, dict):
        parser.error(f'--backbone-options must be a JSON object, got {text!r}')
    try:
        SparXMamba(arch, **options)
    except (TypeError, ValueError) as error:
        parser.error(f'--backbone-options: {error}')
    return options


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', nargs='+', default=['t'], choices=sorted(SparXMamba.arch_zoo))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', nargs='+', default=['fp32'], choices=sorted(DTYPES))
    parser.add_argument('--mode', nargs='+', default=['infer'], choices=['infer', 'train'])
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--compile', action='store_true', help='torch.compile the model first')
    parser.add_argument('--cuda-graph', action='store_true',
                        help='replay the model from CUDA graphs (CUDA only; see above)')
    parser.add_argument('--optimizer', default='adamw', choices=sorted(OPTIMIZERS),
                        help="training's optimizer: torch's default AdamW or AdamW(fused=True) (see above)")
    parser.add_argument('--channels-last', action='store_true',
                        help='run in channels-last memory format (weights and input)')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    parser.add_argument('--unfolded', action='store_true',
                        help='inference with every BatchNorm and GELU as its own module, not folded into the '
                             'convolution before it (layers.FoldingSequential), to compare')
    add_backbone_options(parser)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.size < 1 or args.iters < 1:
        parser.error('--batch, --size and --iters must be positive')
    if args.cuda_graph and not args.device.startswith('cuda'):
        parser.error(f'--cuda-graph needs a CUDA device, got --device {args.device}')
    if args.cuda_graph and args.compile:
        parser.error('--cuda-graph and --compile are exclusive (torch.compile graphs the model itself with '
                     "mode='reduce-overhead')")
    backbone_options = parse_backbone_options(parser, args.backbone_options, args.arch[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'# SparX-Mamba benchmark on {name}, torch {torch.__version__}; median of {args.iters} iterations'
          + (', torch.compile' if args.compile else '') + (', CUDA graphs' if args.cuda_graph else '')
          + (', channels-last' if args.channels_last else '') + (', BatchNorms unfolded' if args.unfolded else '')
          + (f', backbone options {backbone_options}' if backbone_options else '')
          + (f', optimizer {args.optimizer}' if 'train' in args.mode else ''))
    print(f"{'arch':>4} {'mode':>5} {'dtype':>5} {'batch':>5} {'size':>5} {'ms/iter':>9} {'img/s':>9} {'peak GB':>8} "
          f"{'host ms':>8}")
    failed = []
    for arch in args.arch:
        for mode in args.mode:
            for dtype in args.dtype:
                r, error = None, None
                try:
                    with unfolded() if args.unfolded else contextlib.nullcontext():
                        r = measure(arch, args.batch, args.size, device, dtype, mode, args.warmup, args.iters,
                                    args.compile, args.channels_last, backbone_options, args.cuda_graph,
                                    args.optimizer)
                except torch.OutOfMemoryError:
                    pass  # one setting too large for the device must not cost the rest of the table
                except Exception as exc:  # noqa: BLE001 -- reported in full here, and in the exit status
                    # Any other failure (a CUDA graph capture, a kernel) is reported where it happened, its whole
                    # chain of exceptions on stderr, and the table goes on: a long run keeps its other rows.
                    error = ': '.join([type(exc).__name__] + str(exc).strip().splitlines()[:1])
                    traceback.print_exc()
                    failed.append(f'{arch} {mode} {dtype}')
                if r is None:
                    torch.cuda.empty_cache()  # here, once the failed setting's tensors are released
                    outcome = 'out of memory' if error is None else f'failed ({error})'
                    print(f'{arch:>4} {mode:>5} {dtype:>5} {args.batch:>5} {args.size:>5}   {outcome}', flush=True)
                    continue
                print(f"{r['arch']:>4} {r['mode']:>5} {r['dtype']:>5} {r['batch']:>5} {r['size']:>5} "
                      f"{r['ms']:>9.1f} {r['img_s']:>9.1f} {r['peak_gb']:>8.2f} {r['host_ms']:>8.1f}", flush=True)
    if failed:
        sys.exit(f'benchmark.py: {len(failed)} setting(s) failed ({", ".join(failed)}); their tracebacks are above')


if __name__ == '__main__':
    main()
