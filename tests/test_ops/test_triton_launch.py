"""sparx_mm.ops.triton_launch: the launch-size arithmetic and the cached launch's choice between Triton's own
launch and the compiled kernel's launcher (no GPU: a recording kernel stands in for Triton's)."""
import pytest
import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

from sparx_mm.ops.triton_launch import cdiv, launch, next_power_of_2, power_of_two_factor


def test_cdiv_and_next_power_of_2_match_triton():
    for n in range(0, 300):
        assert next_power_of_2(n) == triton.next_power_of_2(n)
        for d in (1, 3, 16, 64):
            assert cdiv(n, d) == triton.cdiv(n, d)


def _toy(x_ptr, y_ptr, n, scale, BLOCK: tl.constexpr, FLAG: tl.constexpr = False):
    pass


class _Compiled:
    """A compiled kernel whose launcher records its calls."""

    def __init__(self, launches):
        self.function, self.packed_metadata = 'function', 'metadata'
        self.run = lambda *call: launches.append(call)


class _RecordingKernel(JITFunction):
    """A JITFunction whose own launch (``kernel[grid](...)``) records the call instead of compiling."""

    def __init__(self, fn):
        super().__init__(fn)
        self.triton_launches, self.cached_launches = [], []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.triton_launches.append((grid, args, kwargs))
            return _Compiled(self.cached_launches)
        return run


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    monkeypatch.setattr(torch._C, '_cuda_getCurrentRawStream', lambda device: 1234, raising=False)
    return _RecordingKernel(_toy)


@pytest.mark.parametrize('n,limit,factor', [(196, 8, 4), (49, 8, 1), (3136, 8, 8), (3136, 16, 16), (396, 8, 4),
                                            (120, 8, 8), (14, 8, 2), (1, 8, 1), (0, 8, 8)])
def test_power_of_two_factor(n, limit, factor):
    """The largest power of two up to the limit that divides n (0 is a multiple of anything)."""
    assert power_of_two_factor(n, limit) == factor
    assert n % factor == 0


def test_a_repeated_call_takes_the_compiled_launcher_with_the_arguments_in_signature_order(kernel):
    x, y = torch.zeros(64), torch.zeros(64)
    launch(kernel, (3,), x, y, 37, 0.5, BLOCK=32, num_warps=4)
    assert len(kernel.triton_launches) == 1 and not kernel.cached_launches
    launch(kernel, (5, 2), x, y, 41, 0.25, BLOCK=32, num_warps=4)  # another odd count: the same specialisation
    assert len(kernel.triton_launches) == 1
    (call, ) = kernel.cached_launches
    assert call[:9] == (5, 2, 1, 1234, 'function', 'metadata', None, None, None)
    assert call[9:] == (x, y, 41, 0.25, 32, False)  # FLAG from its default
    launch(kernel, (1, ), x, y, 41, 0.25, FLAG=False, BLOCK=32, num_warps=4)  # keywords in another order
    assert len(kernel.cached_launches) == 2 and kernel.cached_launches[-1][9:] == (x, y, 41, 0.25, 32, False)


@pytest.mark.parametrize('change', ['misaligned tensor', 'dtype', 'count of 1', 'count multiple of 16',
                                    'count beyond int32', 'constexpr', 'default constexpr', 'num_warps', 'device'])
def test_whatever_triton_specialises_on_goes_back_to_tritons_launch(kernel, change, monkeypatch):
    x, y = torch.zeros(64), torch.zeros(64)
    args, options = [x, y, 37, 0.5], dict(BLOCK=32, num_warps=4)
    launch(kernel, (1, ), *args, **options)
    if change == 'misaligned tensor':
        args[0] = x[1:]  # 4 bytes past a 16-byte boundary
    elif change == 'dtype':
        args[1] = y.half()
    elif change == 'count of 1':
        args[2] = 1
    elif change == 'count multiple of 16':
        args[2] = 48
    elif change == 'count beyond int32':
        args[2] = 2**31 + 1
    elif change == 'constexpr':
        options['BLOCK'] = 64
    elif change == 'default constexpr':
        options['FLAG'] = True
    elif change == 'num_warps':
        options['num_warps'] = 8
    else:  # another current GPU: Triton compiles and loads per device
        monkeypatch.setattr(torch.cuda, 'current_device', lambda: 1)
    launch(kernel, (1, ), *args, **options)
    assert len(kernel.triton_launches) == 2 and not kernel.cached_launches


@pytest.mark.parametrize('hook', ['enter', 'exit'])
def test_launch_hooks_keep_tritons_launch(kernel, monkeypatch, hook):
    def record(metadata):
        pass

    chain = getattr(triton.knobs.runtime, f'launch_{hook}_hook')
    if hasattr(chain, 'add'):  # Triton 3.8: a chain of hooks, empty unless a profiler adds one
        monkeypatch.setattr(chain, 'calls', [record])
    else:
        monkeypatch.setattr(triton.knobs.runtime, f'launch_{hook}_hook', record)
    for _ in range(2):
        launch(kernel, (1, ), torch.zeros(4), torch.zeros(4), 3, 1.0, BLOCK=4)
    assert len(kernel.triton_launches) == 2 and not kernel.cached_launches


def test_a_compiled_kernel_without_the_launcher_keeps_tritons_launch(kernel, monkeypatch):
    class Bare:  # what another Triton version might return
        pass

    calls = []

    class Kernel(_RecordingKernel):
        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append(grid) or Bare()

    bare_kernel = Kernel(_toy)
    for _ in range(3):
        launch(bare_kernel, (2, ), torch.zeros(4), torch.zeros(4), 3, 1.0, BLOCK=4)
    assert calls == [(2, )] * 3 and bare_kernel._sparx_launch_plan.unsupported


def test_anything_but_a_jit_function_is_launched_by_indexing():
    calls = []

    class Interpreted:  # as Triton's CPU interpreter wraps kernels
        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((grid, args, kwargs))

    launch(Interpreted(), (2, 3), 1, 2, BLOCK=8)
    assert calls == [((2, 3), (1, 2), dict(BLOCK=8))]


def test_the_cached_launch_can_be_switched_off(kernel, monkeypatch):
    monkeypatch.setattr('sparx_mm.ops.triton_launch.ENABLED', False)
    for _ in range(2):
        launch(kernel, (1, ), torch.zeros(4), torch.zeros(4), 3, 1.0, BLOCK=4)
    assert len(kernel.triton_launches) == 2 and not kernel.cached_launches


@pytest.mark.parametrize('value,enabled', [('', True), ('1', True), (' 0 ', False), ('off', None), ('yes', None)])
def test_the_environment_switch_accepts_0_and_1_only(monkeypatch, value, enabled):
    from sparx_mm.ops import triton_launch
    monkeypatch.setenv('SPARX_FAST_LAUNCH', value)
    if enabled is None:
        with pytest.raises(ValueError, match=r"SPARX_FAST_LAUNCH='.*': accepted are 1 .* and 0"):
            triton_launch._enabled_by_environment()
    else:
        assert triton_launch._enabled_by_environment() is enabled
