"""What the GPU check scripts share: the relative error they report and GPU timing.

Imported by the scripts of this folder (their own folder is on sys.path when they run).
"""
import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| in float64; NaN (an unwritten or broken element) counts as infinite."""
    err = ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()
    return err if err == err else float('inf')


def run_check_grid(check_case, tolerances: dict, shapes, device) -> bool:
    """Run ``check_case(shape, mode, device) -> ({name: relative error}, dtypes_ok)`` for every mode of
    ``tolerances`` (mode -> tolerance) and every shape; print each failure, then the largest errors per mode.
    Returns whether everything passed."""
    ok, worst = True, {}
    for mode, tol in tolerances.items():
        for shape in shapes:
            errors, dtypes_ok = check_case(shape, mode, device)
            if not dtypes_ok:
                ok = False
                print(f'FAIL {mode} {shape}: output or gradient dtype')
            for name, err in errors.items():
                worst[mode, name] = max(worst.get((mode, name), 0.0), err)
                if not err <= tol:
                    ok = False
                    print(f'FAIL {mode} {shape} {name}: rel err {err:.2e} (tolerance {tol:.0e})')
            torch.cuda.empty_cache()
    print('largest relative errors against the float64 reference:')
    for mode in tolerances:
        print(f'  {mode:>17}: ' + ', '.join(f'{name} {err:.1e}' for (m, name), err in worst.items() if m == mode))
    return ok


def _sleep_cycles_per_ms() -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10 ** 7)
    end.record()
    torch.cuda.synchronize()
    return 10 ** 7 / start.elapsed_time(end)


def timed(fn, iters: int = 20, warmup: int = 3):
    """(median GPU milliseconds, host milliseconds) of a call of ``fn``. The timed calls are queued behind a
    sleep kernel that outlasts their launching (3x the host time measured just before, the sleep calibrated
    at the current clocks), so the GPU runs them back to back and host-side overhead (Python, launches,
    custom-op dispatch; the host time) stays out of the GPU time."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    host_ms = (time.perf_counter() - t0) * 1e3 / iters
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    torch.cuda._sleep(int((3 * iters * host_ms + 2) * _sleep_cycles_per_ms()))
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    times = sorted(start.elapsed_time(end) for start, end in events)
    return times[len(times) // 2], host_ms


def check_and_bench_parser(doc: str, extra_parts=()) -> argparse.ArgumentParser:
    """The options of the layer-kernel scripts (check_group_norm.py, check_depthwise_conv.py,
    check_pointwise_conv.py) they share: --only check / bench (and ``extra_parts``, run only when named), --batch;
    each adds its kernel's tiling options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='+', choices=('check', 'bench') + tuple(extra_parts),
                        default=('check', 'bench'))
    parser.add_argument('--batch', type=int, default=128, help='batch of the benchmark (default 128)')
    return parser


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f'--jobs takes a whole number of processes, 1 or more; got {text!r}')
    return jobs


def add_jobs_option(parser: argparse.ArgumentParser, what: str):
    """--jobs N: the check's ``what`` each in a process of its own, N at once (:func:`run_parts_in_processes`)."""
    parser.add_argument('--jobs', type=_jobs, default=1, metavar='N',
                        help=f"run the check's {what} each in a process of its own (a run of this script), N at "
                             'once (default 1: all in this process); on a fresh machine compiling the kernels, one '
                             'process at a time, takes most of a check\'s time, and the processes share Triton\'s '
                             'cache')


def run_parts_in_processes(script: str, part_argvs: Sequence[Sequence[str]], jobs: int) -> bool:
    """Run ``python script *argv`` for each argv of ``part_argvs``, at most ``jobs`` at once, and print each run's
    whole output (stdout here, stderr on stderr) under a header, in the order given, as soon as it and the runs
    before it have ended. Returns whether every run exited with status 0."""
    if jobs < 1:
        raise ValueError(f'--jobs must be 1 or more, got {jobs}')

    def run(argv):
        return subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)

    ok = True
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for argv, done in zip(part_argvs, pool.map(run, part_argvs)):
            print(f'## {" ".join(argv)}: exit status {done.returncode}', flush=True)
            print(done.stdout, end='', flush=True)
            print(done.stderr, end='', file=sys.stderr, flush=True)
            ok = ok and done.returncode == 0
    return ok


def require_cuda(script: str):
    if not torch.cuda.is_available():
        sys.exit(f'{script} needs a CUDA GPU')


def override_constants(module, args, names: dict):
    """Set ``module.NAME`` from each given option (``names``: option -> NAME); list values become tuples."""
    for option, name in names.items():
        value = getattr(args, option)
        if value is not None:
            setattr(module, name, tuple(value) if isinstance(value, list) else value)
