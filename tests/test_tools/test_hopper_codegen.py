"""tools/analysis_tools/hopper_codegen.py: its configurations and one compiled summary (no GPU needed)."""
import re

import pytest

from ..conftest import load_tool


@pytest.fixture(scope='module')
def codegen():
    return load_tool('tools/analysis_tools/hopper_codegen.py')


def test_scan_backward_configs_pair_the_tensor_core_choice_with_its_control(codegen):
    """SparX-T: stages 1-2 (ranks 6, 12) only the multiply-adds they run; stages 3-4 (ranks 20, 32) the
    tensor-core tiling and the 8-channel multiply-adds next to it, in float16 and float32."""
    configs = list(codegen.scan_backward_configs('t'))
    assert len(configs) == 2 * 2 + 2 * 2 * 2
    ranks = [arguments[0] for _, arguments in configs]
    assert ranks == [6, 6, 12, 12] + [20] * 4 + [32] * 4
    chosen = [arguments for label, arguments in configs if ' chosen ' in label]
    assert [a[3:] for a in chosen] == [(8, 2, 0)] * 4 + [(16, 2, 32)] * 4


def test_dt_projection_grads_configs_cover_each_stage_in_three_dtypes(codegen):
    """SparX-T: each stage's scan (d_inner 2C, its map, rank ceil(C / 16)) in float16, bfloat16 and float32."""
    configs = list(codegen.dt_projection_grads_configs('t'))
    assert [arguments for _, arguments in configs[::3]] == [('fp16', 192, 3136, 6), ('fp16', 384, 784, 12),
                                                            ('fp16', 640, 196, 20), ('fp16', 1024, 49, 32)]
    assert [arguments[0] for _, arguments in configs[:3]] == ['fp16', 'bf16', 'fp32']


def test_wgrad_configs_cover_each_stages_four_convolutions_and_a_dmca_fusion_conv(codegen):
    """SparX-T's sixteen 1x1 convolutions and a grouped DMCA fusion conv a stage, in float16 and TF32; a grouped
    conv compiles its group's product."""
    configs = list(codegen.pointwise_wgrad_configs('t'))
    assert len(configs) == 4 * 5 * 2
    assert configs[0] == ('1x1 weight gradient 96->192 56x56 float16', (96, 192, 3136, 'fp16', None, 1))
    assert configs[8] == ('1x1 weight gradient 288->192 (3 groups) 56x56 float16', (96, 64, 3136, 'fp16', None, 3))
    # 7 x 7 maps keep cuDNN in the model (forward and backward): said in the label
    assert [label.endswith('(the model runs cuDNN here)') for label, _ in configs] == [False] * 30 + [True] * 10


def test_summary_of_a_compiled_kernel(codegen):
    """One configuration compiled for sm_90 and assembled: registers, spills, the TF32 product, 16-byte copies."""
    text = codegen.summary(codegen.wgrad_ptx(96, 192, 3136, 'fp32'))
    registers, spills = map(int, re.match(r' *(\d+) registers, spills (\d+) B', text).groups())
    assert 0 < registers <= 255 and spills == 0, text
    assert 'tf32' in text and 'cp.async 16' in text, text


def test_gelu_configs_are_the_dmca_shortcut_projections_where_the_kernel_runs(codegen):
    """SparX-T's distinct DMCA shortcut projections (1x1 + GELU) at maps of 128 positions or more, each in float16
    and TF32, with the launch's warps and the 4-warp control."""
    configs = list(codegen.pointwise_gelu_configs('t'))
    assert configs[0] == ("1x1 + GELU 384->384 28x28 float16, the launch's warps", (384, 384, 784, 'fp16', None))
    assert configs[1][1] == (384, 384, 784, 'fp16', 4)
    assert {args[:3] for _, args in configs} == {(384, 384, 784)} | {(c, 640, 196) for c in (320, 640, 960, 1280)}
    assert len(configs) == 5 * 4
