"""GPU check of the Triton kernels against the PyTorch reference (run on a CUDA machine).

    python tools/gpu_checks/check_kernels.py [--model]
        [--only scan cross model recompute launch graph layout shuffle dmca]
        [--whole-axis N [N ...]] [--jobs N]

Checks the selective scan and the fused SS2D scan core (cross_selective_scan: routes read from the map, dt
projection, scan, merge), forward and every gradient, and its forward pass without autograd (the inference
tilings, the dt projection on tensor cores), on random inputs of awkward sizes (H != W, lengths
that are not multiples of the block, channels that are not multiples of the channel block, N > 1, one / two
/ four routes, L = 1) in fp32 / bf16 / fp16, then (with --model) whole SparX-Mamba outputs and input
gradients (train and eval mode; outputs alone without autograd, where the scan kernel takes its inference
tilings and the BatchNorms fold into the convolutions before them) with the Triton kernels (plain scan, fused
scan core, fused scan core + the layer kernels) against the reference, a training step with the backward
pass recomputing normalised / hidden maps against one keeping them (bit-identical gradients), the model with
the kernels launched from the cache of compiled kernels against Triton's own launch (bit-identical outputs and
gradients), and the classifier that benchmark.py times replayed from CUDA graphs (``--cuda-graph``) against
eager mode (bit-identical outputs and gradients); and the NCHW <-> channels-last conversions
(``convert_memory_format``: the transpose kernel against torch's copy, bit for bit, with both one's GPU times),
and the DMCA's concatenation + shuffle (``concat_shuffled``: its kernel against its torch path, bit for bit, forward
and backward, with the GPU times), and the DMCA's float16 training path (autocast: the channel attention's explicit
products, the channel padding's reduction) against float64.
Prints the largest relative errors and exits non-zero when one exceeds its tolerance. ``--jobs N`` runs each part
in a process of its own, N at once (the kernels compile in parallel; the GPU times that the layout and shuffle
parts print are then taken beside the other parts' work). The layer kernels' own checks:
check_group_norm.py, check_depthwise_conv.py, check_pointwise_conv.py.
"""
import argparse
import os
import sys
from contextlib import contextmanager

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.ops import (cross_selective_scan, cross_selective_scan_reference, selective_scan,  # noqa: E402
                          selective_scan_reference)
from gpu_common import add_jobs_option, rel_err, run_parts_in_processes  # noqa: E402

# Gradients come back in the input dtype, so bf16 / fp16 errors are their rounding (2^-8, 2^-11).
TOL = {torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}
# (batch, routes, channels per route, d_state, length)
SHAPES = [(2, 4, 16, 1, 197), (1, 4, 24, 4, 300), (3, 2, 8, 1, 128), (2, 4, 40, 1, 1), (1, 4, 96, 1, 3136),
          (2, 1, 12, 2, 129)]
# cross_selective_scan: (batch, channels, H, W, routes, d_state, dt rank); SparX-T's stage 1 and 3 sizes among
# them (channels 128 at 56 x 56 with rank 4, 640 at 14 x 14 with rank 20: the 14 x 14 training tiling), SparX-B's
# stage 4 (rank 40 padded to 64 on 49 positions: one 64-position chunk, the backward's wide tiling); ranks above 8
# (dt on tensor cores in the forward and backward kernels) with four and two routes.
CROSS_SHAPES = [(2, 128, 56, 56, 4, 1, 4), (2, 640, 14, 14, 4, 1, 20), (1, 42, 13, 11, 4, 1, 3),
                (2, 32, 9, 16, 2, 2, 5), (1, 8, 3, 50, 1, 1, 2), (2, 16, 1, 1, 4, 1, 4), (1, 24, 7, 200, 4, 1, 48),
                (1, 40, 9, 13, 2, 1, 10), (2, 1272, 7, 7, 4, 1, 40)]
# Forward only (the inference tilings; with a dt rank above 8 the dt projection on tensor cores): also SparX-T's
# stage 2 and 4, SparX-B's stage 3.
INFER_SHAPES = CROSS_SHAPES + [(2, 384, 28, 28, 4, 1, 12), (2, 1024, 7, 7, 4, 1, 32), (2, 792, 14, 14, 4, 1, 25)]


def make_inputs(batch, routes, per_route, n, length, dtype, device):
    kd = routes * per_route
    g = torch.Generator(device='cpu').manual_seed(batch * 1000 + length)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=rnd(batch, kd, length).to(device, dtype), delta=(0.5 * rnd(batch, kd, length)).to(device, dtype),
                A=(-torch.rand(kd, n, generator=g) - 0.1).to(device), B=rnd(batch, routes, n, length).to(device, dtype),
                C=rnd(batch, routes, n, length).to(device, dtype), D=rnd(kd).to(device),
                delta_bias=(0.2 * rnd(kd)).to(device))


def compare_with_reference(title, shapes, make, run, run_ref, device):
    """Forward and every gradient of ``run(shape, **inputs)`` (fp32 / bf16 / fp16 inputs from ``make``)
    against ``run_ref(shape, **float32 copies)``; prints the largest relative errors per dtype and returns
    whether all are within TOL. Outputs must be float32 and gradients come back in their input's dtype."""
    worst, ok = {}, True
    for dtype in TOL:
        for shape in shapes:
            inputs = make(*shape, dtype, device)
            leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
            ref_leaves = {k: v.detach().clone().float().requires_grad_() for k, v in inputs.items()}
            y = run(shape, **leaves)
            y_ref = run_ref(shape, **ref_leaves)
            grad = torch.randn_like(y_ref)
            y.backward(grad)
            y_ref.backward(grad)
            assert y.dtype == torch.float32
            assert all(leaf.grad.dtype == leaf.dtype for leaf in leaves.values())
            errors = {'y': rel_err(y, y_ref)}
            for k in leaves:  # with L = 1 the output does not depend on A: autograd leaves its grad None
                ref_grad = ref_leaves[k].grad
                errors['d' + k] = rel_err(leaves[k].grad, torch.zeros_like(ref_leaves[k]) if ref_grad is None
                                          else ref_grad)
            for name, err in errors.items():
                key = (str(dtype).split('.')[-1], name)
                worst[key] = max(worst.get(key, 0.0), err)
                if err > TOL[dtype]:
                    ok = False
                    print(f'FAIL {title} {dtype} {shape} {name}: rel err {err:.2e}')
    print(f'largest relative errors, {title} (float32 reference on the same rounded inputs):')
    for dtype in ('float32', 'bfloat16', 'float16'):
        row = ', '.join(f'{name} {err:.1e}' for (d, name), err in sorted(worst.items()) if d == dtype)
        print(f'  {dtype}: {row}')
    return ok


def check_scan(device):
    return compare_with_reference(
        'Triton selective scan vs reference', SHAPES, make_inputs,
        lambda shape, **t: selective_scan(**t, delta_softplus=True, backend='triton'),
        lambda shape, **t: selective_scan_reference(**t, delta_softplus=True), device)


def make_cross_inputs(batch, channels, h, w, routes, n, rank, dtype, device):
    g = torch.Generator(device='cpu').manual_seed(channels * 7 + h)
    kd = routes * channels
    return dict(x=torch.randn(batch, channels, h, w, generator=g).to(device, dtype),
                proj=torch.randn(batch, routes, rank + 2 * n, h * w, generator=g).to(device, dtype),
                dt_weight=(rank ** -0.5 * torch.randn(routes, channels, rank, generator=g)).to(device),
                A=(-torch.rand(kd, n, generator=g) - 0.1).to(device), D=torch.randn(kd, generator=g).to(device),
                dt_bias=(torch.randn(kd, generator=g) - 3).to(device))


def check_cross_scan(device):
    ok = compare_with_reference(
        'fused cross_selective_scan vs reference composition', CROSS_SHAPES, make_cross_inputs,
        lambda shape, **t: cross_selective_scan(**t, routes=shape[4], impl='fused'),
        lambda shape, **t: cross_selective_scan_reference(**t, routes=shape[4], scan_backend='reference'), device)
    return check_cross_scan_inference(device) and ok


def check_cross_scan_inference(device):
    """The fused forward pass without autograd (its inference tilings) against the reference composition on
    the same rounded inputs: both compute in float32, so every input dtype is held to 1e-5."""
    from sparx_mm.ops.triton_cross_scan import inference_tiling
    ok, worst = True, {}
    for dtype in TOL:
        for shape in INFER_SHAPES:
            inputs = make_cross_inputs(*shape, dtype, device)
            with torch.no_grad():
                y = cross_selective_scan(**inputs, routes=shape[4], impl='fused')
                y_ref = cross_selective_scan_reference(**{k: v.float() for k, v in inputs.items()}, routes=shape[4],
                                                       scan_backend='reference')
            err = rel_err(y, y_ref)
            dt_dot = inference_tiling(shape[2] * shape[3], shape[6], dtype)[3]
            key = (str(dtype)[6:], 'dt on tensor cores' if dt_dot else 'dt by multiply-adds')
            worst[key] = max(worst.get(key, 0.0), err)
            if not err <= 1e-5:
                ok = False
                print(f'FAIL fused forward without autograd {dtype} {shape}: y rel err {err:.2e} (tolerance 1e-5)')
    print('largest relative errors, fused forward without autograd (inference tilings) vs reference composition:')
    for dtype in ('float32', 'bfloat16', 'float16'):
        print(f'  {dtype}: ' + ', '.join(f'y ({how}) {err:.1e}' for (d, how), err in sorted(worst.items())
                                        if d == dtype))
    return ok


def check_model(device):
    """Whole SparX-T, outputs and input gradients, with each scan path in float32 against the same model in
    float64 (reference path). A Triton path passes when its error is within 4x the float32 reference path's
    own error (or 1e-5): SparX's input gradient at initialisation is ill-conditioned enough that float32
    rounding alone moves it by ~1e-2, whatever the scan. TF32 is off, or the comparison would measure it."""
    import copy
    from sparx_mm.models import SparXMamba
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = SparXMamba('t', dmca_scale='learnable', drop_path_rate=0.0).to(device)
    # BatchNorm statistics and affine parameters away from their initial 0 / 1, so that the inference pass's
    # folded BatchNorms (layers.FoldingSequential) are checked with values that matter.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    model64 = copy.deepcopy(model).double()
    # name -> (model, SPARX_CROSS_SCAN, SPARX_SCAN_BACKEND, SPARX_LAYER_KERNELS); the first is the ground truth.
    configs = {'float64 reference': (model64, 'unfused', 'reference', 'reference'),
               'reference': (model, 'unfused', 'reference', 'reference'),
               'triton scan': (model, 'unfused', 'triton', 'reference'),
               'fused': (model, 'fused', '', 'reference'),
               'fused + layer kernels': (model, 'fused', '', 'triton')}
    names = ('SPARX_CROSS_SCAN', 'SPARX_SCAN_BACKEND', 'SPARX_LAYER_KERNELS')
    ok = True
    # 'inference': eval mode without autograd (the kernels' inference tilings), outputs only. Before 'train',
    # whose forward passes move the float32 model's BatchNorm statistics away from the float64 copy's.
    for mode in ('eval', 'inference', 'train'):
        outs, grads = {}, {}
        for name, (net, *env) in configs.items():
            net.train(mode == 'train')
            os.environ.update(zip(names, env))
            torch.manual_seed(1)
            x = torch.randn(2, 3, 224, 160, device=device).to(next(net.parameters()).dtype)
            with torch.set_grad_enabled(mode != 'inference'):
                feats = net(x.requires_grad_(mode != 'inference'))
            if mode != 'inference':
                sum(f.square().mean() for f in feats).backward()
            outs[name] = [f.detach() for f in feats]
            grads[name] = x.grad
        for env_name in names:
            os.environ.pop(env_name)
        errors = {name: (max(rel_err(a, b) for a, b in zip(outs[name], outs['float64 reference'])),
                         0.0 if mode == 'inference' else rel_err(grads[name], grads['float64 reference']))
                  for name in list(configs)[1:]}
        ref_out, ref_grad = errors['reference']
        if ref_out > 1e-4 or ref_grad > 0.1:
            print(f'FAIL the float32 reference itself is {ref_out:.1e} / {ref_grad:.1e} from float64: the '
                  'comparison is broken')
            ok = False
        for name, (out_err, grad_err) in errors.items():
            passed = out_err <= max(4 * ref_out, 1e-5) and grad_err <= max(4 * ref_grad, 1e-5)
            grad_text = '' if mode == 'inference' else f', input-gradient rel err {grad_err:.1e}'
            print(f'SparX-T {mode}, 2x3x224x160, {name} (float32) vs float64: outputs rel err {out_err:.1e}'
                  f'{grad_text}{"" if passed else "  FAIL"}')
            ok &= passed
    return ok


def _identical(tensors, others) -> bool:
    return all(torch.equal(a, b) for a, b in zip(tensors, others))


def _bit_identity(reference, again, other):
    """(ok, verdict) of ``other`` against ``reference``, where ``again`` is ``reference`` rerun: a difference
    counts only once the reference repeats itself bit for bit."""
    if not _identical(reference, again):
        return False, 'not repeatable  FAIL'
    differ = [(a, b) for a, b in zip(reference, other) if not torch.equal(a, b)]
    if not differ:
        return True, 'bit-identical'
    return False, f'{len(differ)} DIFFER (largest rel err {max(rel_err(b, a) for a, b in differ):.1e})  FAIL'


@contextmanager
def _deterministic_cudnn():
    """cuDNN's deterministic algorithms for the bit-identity checks; the caller's setting restored after."""
    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = deterministic


def check_recompute(device):
    """SparX-T trained one step under fp16 autocast with the backward pass recomputing SS2D's normalised maps
    and the FFN hidden maps (the defaults) and with both kept: the same outputs and bit-identical gradients (the
    recomputation reruns the same deterministic kernels on the same inputs), and the bytes autograd keeps."""
    from sparx_mm.models import SparXMamba
    results = {}
    for recompute in (True, False):
        torch.manual_seed(0)
        model = SparXMamba('t', ffn_recompute=recompute, norm_recompute=recompute).to(device).train()
        torch.manual_seed(1)
        x = torch.randn(8, 3, 224, 224, device=device, requires_grad=True)
        kept = [0]

        def count(t):
            kept[0] += t.numel() * t.element_size()
            return t

        # Counting hooks around ours: the recomputation hands every other tensor on to them.
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t), \
                torch.autocast('cuda', dtype=torch.float16):
            feats = model(x)
        sum(f.float().square().mean() for f in feats).backward()
        results[recompute] = ([f.detach() for f in feats], x.grad, [p.grad for p in model.parameters()], kept[0])
    (outs, gx, gps, kept), (outs0, gx0, gps0, kept0) = results[True], results[False]
    same = _identical(outs, outs0) and torch.equal(gx, gx0) and _identical(gps, gps0)
    print(f'SparX-T fp16 training step, batch 8, recomputed vs kept maps: outputs and gradients '
          f'{"bit-identical" if same else "DIFFER  FAIL"}; autograd keeps {kept / 2**20:.0f} MiB instead of '
          f'{kept0 / 2**20:.0f} MiB', flush=True)
    return same and kept < kept0


def check_launch(device, batch=8):
    """SparX-T with the Triton kernels launched from the cache of compiled kernels (sparx_mm/ops/triton_launch.py)
    and by Triton's own launch: bit-identical outputs and parameter gradients (the same compiled kernels on the
    same inputs), in eval mode and for a training step, float32 and float16 autocast. cuDNN is deterministic
    here, and each setting also runs twice with the cached launch, so that a difference would be the launch's."""
    from sparx_mm.models import SparXMamba
    from sparx_mm.ops import triton_launch
    torch.manual_seed(0)
    model = SparXMamba('t').to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)

    def run(train, dtype):
        model.train(train)
        model.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=torch.float16, enabled=dtype == torch.float16), \
                torch.set_grad_enabled(train):
            feats = model(x)
        tensors = [f.detach().float() for f in feats]
        if train:
            sum(f.float().square().mean() for f in feats).backward()
            tensors += [p.grad for p in model.parameters() if p.grad is not None]
        return tensors

    ok = True
    try:
        with _deterministic_cudnn():
            for train in (False, True):
                for dtype in (torch.float32, torch.float16):
                    triton_launch.ENABLED = True
                    cached, again = run(train, dtype), run(train, dtype)
                    triton_launch.ENABLED = False
                    same, verdict = _bit_identity(cached, again, run(train, dtype))
                    print(f'SparX-T batch {batch} {"training step" if train else "eval"} {str(dtype)[6:]}: '
                          f'{len(cached)} tensors, cached launch vs Triton\'s own {verdict}', flush=True)
                    ok &= same
    finally:
        triton_launch.ENABLED = True
    return ok


def check_graph(device, batch=8):
    """The classifier of benchmark.py (SparX-T) replayed from CUDA graphs as ``benchmark.py --cuda-graph`` does
    (one captured inference pass; the forward and backward passes of a training step graphed by
    torch.cuda.make_graphed_callables) against eager mode: bit-identical outputs, and in training bit-identical
    parameter gradients, float32 and float16 autocast. Eager mode runs twice first, so that a difference would
    be the graph's."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'analysis_tools'))
    from benchmark import Classifier, autocast_for, graph_inference, graph_training
    ok = True
    with _deterministic_cudnn():
        for train in (False, True):
            for dtype in ('fp32', 'fp16'):
                torch.manual_seed(0)
                model = Classifier('t').to(device).train(train)
                x = torch.randn(batch, 3, 224, 224, device=device)

                def run(module):
                    module.zero_grad(set_to_none=True)
                    if not train:
                        with torch.inference_mode(), autocast_for(device, dtype, cache=False):
                            return [module(x).float().clone()]
                    with autocast_for(device, dtype, cache=False):
                        out = module(x)
                    out.float().square().mean().backward()
                    return [out.detach().float().clone()] + [p.grad.clone() for p in model.parameters()]

                eager, again = run(model), run(model)
                if train:
                    graphed = run(graph_training(model, x, dtype))
                else:
                    replay, output = graph_inference(model, x, dtype)
                    replay()
                    graphed = [output.float().clone()]
                same, verdict = _bit_identity(eager, again, graphed)
                print(f'SparX-T classifier batch {batch} {"training step" if train else "eval"} {dtype}: '
                      f'{len(eager)} tensors, CUDA graph replay vs eager {verdict}', flush=True)
                ok &= same
    return ok


# convert_memory_format: (batch, channels, H, W, dtype): the maps of SparX-T's stem and downsampling layers at
# batch 128 (the input image in float32), and ones whose C and H*W are no multiple of the 32 x 32 tiles.
LAYOUT_SHAPES = [(128, 3, 224, 224, torch.float32), (128, 96, 56, 56, torch.float16),
                 (128, 192, 28, 28, torch.float16), (128, 320, 14, 14, torch.float16),
                 (128, 512, 7, 7, torch.bfloat16), (2, 70, 13, 11, torch.float32), (3, 5, 9, 37, torch.float16)]


def check_layout(device, whole_axis=None):
    """convert_memory_format (the transpose kernel) against torch's copy, NCHW -> channels-last and back:
    bit-identical values, the requested layout, the gradient bit-identical in the input's layout; and the GPU
    time of both (the conversions the channels-last stem and downsampling layers run)."""
    from sparx_mm.ops import convert_memory_format
    from gpu_common import timed
    ok = True
    for *shape, dtype in LAYOUT_SHAPES:
        g = torch.Generator(device='cpu').manual_seed(sum(shape))
        base = torch.randn(*shape, generator=g).to(device, dtype)
        for target in (torch.channels_last, torch.contiguous_format):
            source = torch.contiguous_format if target == torch.channels_last else torch.channels_last
            x = base.contiguous(memory_format=source).detach().requires_grad_()
            y = convert_memory_format(x, target)
            grad = torch.randn(*shape, generator=g).to(device, dtype).contiguous(memory_format=target)
            y.backward(grad)
            passed = (torch.equal(y, x) and y.is_contiguous(memory_format=target) and torch.equal(x.grad, grad)
                      and x.grad.is_contiguous(memory_format=source))
            detached = x.detach()
            kernel_ms = timed(lambda: convert_memory_format(detached, target))[0]
            torch_ms = timed(lambda: detached.contiguous(memory_format=target))[0]
            name = 'channels-last' if target == torch.channels_last else 'NCHW'
            print(f'layout {tuple(shape)} {str(dtype)[6:]} -> {name}: {"exact" if passed else "FAIL"}; '
                  f'kernel {kernel_ms:.3f} ms, torch\'s copy {torch_ms:.3f} ms', flush=True)
            ok &= passed
    from sparx_mm.ops import triton_transpose
    default = triton_transpose.WHOLE_AXIS
    try:
        for value in whole_axis or [default]:
            triton_transpose.WHOLE_AXIS = value
            print(f'scan transposes, axes up to {value} whole in a tile (WHOLE_AXIS; default {default}):', flush=True)
            ok &= check_scan_transposes(device)
    finally:
        triton_transpose.WHOLE_AXIS = default
    return ok


# The cross scan's plane transposes at SparX-T's four stages, batch 128: (d_inner, map size, projection channels
# rank + 2). Each stage's three uses: x^T (float16), the merge of the pairs' sums (a float32 add), the projections
# in route order (alternating runs of the four routes' planes).
SCAN_TRANSPOSE_STAGES = [(192, 56, 8), (384, 28, 14), (640, 14, 22), (1024, 7, 34)]


def check_scan_transposes(device, batch=128):
    """plane_transpose against torch's copy of the transposed view (exact) and the GPU time of both."""
    from sparx_mm.ops.triton_transpose import plane_tiling, plane_transpose
    from gpu_common import timed
    ok, total = True, [0.0, 0.0]
    for d_inner, size, proj_channels in SCAN_TRANSPOSE_STAGES:
        g = torch.Generator(device='cpu').manual_seed(size)
        x = torch.randn(batch, d_inner, size, size, generator=g).to(device, torch.float16)
        add = torch.randn(batch, d_inner, size, size, generator=g).to(device)
        proj = torch.randn(batch * 4, proj_channels, size, size, generator=g).to(device, torch.float16)
        uses = (('x^T', lambda: plane_transpose(x), lambda: x.transpose(-1, -2).contiguous()),
                ('merge', lambda: plane_transpose(x, add, torch.float32),
                 lambda: x.transpose(-1, -2).float() + add),
                ('route order', lambda: plane_transpose(proj, alternate_every=proj_channels),
                 lambda: torch.stack([proj[0::2], proj[1::2].transpose(-1, -2)], 1).view(proj.shape)))
        for name, kernel, reference in uses:
            passed = torch.equal(kernel(), reference())
            kernel_ms, torch_ms = timed(kernel)[0], timed(reference)[0]
            total[0] += kernel_ms
            total[1] += torch_ms
            planes, run_planes = (proj.shape[0] * proj_channels, proj_channels) if name == 'route order' else \
                (batch * d_inner, 0)
            tiling = plane_tiling(planes, size, size, run_planes)
            print(f'scan transpose {d_inner} x {size} x {size} {name} (planes, rows, columns a program '
                  f'{tiling[:3]}): {"exact" if passed else "FAIL"}; kernel {kernel_ms:.3f} ms, torch {torch_ms:.3f} ms',
                  flush=True)
            ok &= passed
    print(f'scan transposes, all stages: kernel {total[0]:.3f} ms, torch {total[1]:.3f} ms', flush=True)
    return ok


# The DMCAs' concatenation + shuffle (x, attention, values of C channels each, 3 groups) at SparX-T's stages 2-4
# (batch 128, float16) and an awkward one: (batch, C, map size).
SHUFFLE_SHAPES = [(128, 192, 28), (128, 320, 14), (128, 512, 7), (3, 7, 5)]


def check_shuffle(device):
    """concat_shuffled's kernel against its torch path (the same values, bit for bit: a copy), forward and each
    input's gradient, with both one's GPU times (forward; backward from the output's gradient)."""
    from sparx_mm.ops import concat_shuffled
    from gpu_common import timed
    ok, totals = True, [0.0] * 4
    for batch, channels, size in SHUFFLE_SHAPES:
        g = torch.Generator(device='cpu').manual_seed(channels)
        tensors = [torch.randn(batch, channels, size, size, generator=g).to(device, torch.float16).requires_grad_()
                   for _ in range(3)]
        outs = [concat_shuffled(tensors, 3, impl=impl) for impl in ('triton', 'reference')]
        upstream = torch.randn(outs[0].shape, generator=g).to(device, torch.float16)
        grads = [torch.autograd.grad(out, tensors, upstream) for out in outs]
        passed = torch.equal(*outs) and all(torch.equal(a, b) and a.is_contiguous() for a, b in zip(*grads))
        ok &= passed
        times = []
        for impl in ('triton', 'reference'):
            with torch.no_grad():
                times.append(timed(lambda: concat_shuffled(tensors, 3, impl=impl))[0])
            out = concat_shuffled(tensors, 3, impl=impl)
            times.append(timed(lambda: torch.autograd.grad(out, tensors, upstream, retain_graph=True))[0])
        totals = [t + new for t, new in zip(totals, times)]
        print(f'concat_shuffled 3 x {(batch, channels, size, size)} float16: {"exact" if passed else "FAIL"}; '
              f'forward kernel {times[0]:.3f} ms, torch {times[2]:.3f}; backward kernel {times[1]:.3f} ms, torch '
              f'{times[3]:.3f}', flush=True)
    print(f'concat_shuffled, all shapes: forward kernel {totals[0]:.3f} ms, torch {totals[2]:.3f}; backward kernel '
          f'{totals[1]:.3f} ms, torch {totals[3]:.3f}')
    return ok


# DMCAs of SparX-S (the stage-3 and stage-4 ganglion layers: two-channel paddings, the stage-3 one with spatial
# reduction 2): (dim, shortcut channels, out channels, sr ratio, map size).
DMCA_SHAPES = [(328, 3 * 328, 656, 2, 14), (544, 2 * 544, 1088, 1, 7)]


def check_dmca(device, batch=32):
    """The DMCA's training path in float16 (autocast), where the channel attention runs as explicit products and
    the channel padding as its own reduction: output and input gradients against the same module in float64 (rel
    err within 2e-2, finite), and the padding against the official composition (torch.cat + adaptive_avg_pool3d:
    the gradient bit for bit; the means within 1e-3 relative of float64's)."""
    import copy
    import torch.nn.functional as F
    from sparx_mm.models.sparx import DMCA
    from sparx_mm.models.sparx.dmca import pad_channels_by_pooling
    ok = True
    for dim, shortcut_channels, out_channels, sr, size in DMCA_SHAPES:
        torch.manual_seed(dim)
        dmca = DMCA(dim, shortcut_channels, out_channels, sr_ratio=sr).to(device).train()
        dmca64 = copy.deepcopy(dmca).double()
        x = torch.randn(batch, dim, size, size, device=device)
        shortcut = torch.randn(batch, shortcut_channels, size, size, device=device)
        upstream = torch.randn(batch, out_channels, size, size, device=device)
        results = []
        for net, dtype in ((dmca64, torch.float64), (dmca, torch.float32)):
            inputs = [x.to(dtype).requires_grad_(), shortcut.to(dtype).requires_grad_()]
            with torch.autocast('cuda', dtype=torch.float16, enabled=dtype == torch.float32):
                out = net(*inputs)
            grads = torch.autograd.grad(out, inputs, upstream.to(out.dtype))
            results.append((out.float(), *[g.float() for g in grads]))
        errors = [rel_err(a, b) for a, b in zip(results[1], results[0])]
        finite = all(torch.isfinite(t).all() for t in results[1])
        passed = finite and max(errors) <= 2e-2
        ok &= passed
        print(f'DMCA({dim}, {shortcut_channels} -> {out_channels}, sr {sr}) train, {batch} x {size} x {size}, autocast '
              f'float16 vs float64: output {errors[0]:.1e}, dx {errors[1]:.1e}, dshortcut {errors[2]:.1e}'
              f'{"" if passed else "  FAIL"}', flush=True)
        extra = out_channels - out_channels // 3 * 3
        y = torch.randn(batch, out_channels - extra, size, size, device=device, dtype=torch.float16,
                        requires_grad=True)
        padded = pad_channels_by_pooling(y, extra)
        pooled = torch.cat([y, F.adaptive_avg_pool3d(y.unsqueeze(1), (extra, size, size)).squeeze(1)], 1)
        grad_up = torch.randn_like(padded)
        same_grad = torch.equal(*[torch.autograd.grad(t, y, grad_up)[0] for t in (padded, pooled)])
        exact = y.detach().double().unflatten(1, (extra, -1)).mean(2)  # equal bins in SparX-S
        mean_err, pooled_err = (rel_err(t[:, -extra:].double(), exact) for t in (padded, pooled))
        passed = same_grad and mean_err <= 1e-3 and torch.equal(padded[:, :-extra], y)
        ok &= passed
        print(f'pad_channels_by_pooling({out_channels - extra} + {extra}) float16: gradient '
              f'{"bit-identical to" if same_grad else "DIFFERS from"} cat + adaptive_avg_pool3d\'s; means rel err '
              f'{mean_err:.1e} from float64 (the composition\'s {pooled_err:.1e}){"" if passed else "  FAIL"}',
              flush=True)
    return ok


PARTS = ('scan', 'cross', 'model', 'recompute', 'launch', 'graph', 'layout', 'shuffle', 'dmca')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', action='store_true', help='also compare whole-model outputs')
    parser.add_argument('--only', nargs='+', choices=PARTS, default=None,
                        help='run only these parts (default: scan, cross, layout, shuffle and dmca, plus model, '
                             'recompute, launch and graph with --model)')
    parser.add_argument('--whole-axis', type=int, nargs='+', default=None, metavar='N',
                        help='layout part: time the scan\'s transposes with each of these WHOLE_AXIS values '
                             '(triton_transpose.py: axes up to N long in one tile; default the module\'s)')
    add_jobs_option(parser, 'the parts')
    args = parser.parse_args(argv)
    parts = set(args.only or ['scan', 'cross', 'layout', 'shuffle', 'dmca']
                + (['model', 'recompute', 'launch', 'graph'] if args.model else []))
    if not torch.cuda.is_available():
        sys.exit('check_kernels.py needs a CUDA GPU')
    if args.jobs > 1 and len(parts) > 1:
        whole_axis = ['--whole-axis', *map(str, args.whole_axis)] if args.whole_axis else []
        ok = run_parts_in_processes(os.path.abspath(__file__),
                                    [['--only', part] + (whole_axis if part == 'layout' else [])
                                     for part in PARTS if part in parts], args.jobs)
        print('ALL CHECKS PASSED' if ok else 'SOME CHECKS FAILED')
        sys.exit(0 if ok else 1)
    device = torch.device('cuda')
    print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)
    ok = True
    for part, check in (('scan', check_scan), ('cross', check_cross_scan), ('model', check_model),
                        ('recompute', check_recompute), ('launch', check_launch), ('graph', check_graph),
                        ('layout', check_layout), ('shuffle', check_shuffle), ('dmca', check_dmca)):
        if part in parts:
            ok &= check(device, args.whole_axis) if part == 'layout' else check(device)
    print('ALL CHECKS PASSED' if ok else 'SOME CHECKS FAILED')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
