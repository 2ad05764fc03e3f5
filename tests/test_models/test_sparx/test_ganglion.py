import pytest

from sparx_mm.models.backbones.sparx_mamba import SparXMamba
from sparx_mm.models.sparx import STAGE_INPUT, ganglion_plan

# SPEC section 2: ganglion layers and their input widths (in multiples of the stage width), per stage.
EXPECTED = {
    't': ([[], [1], [0, 2, 4, 6], [0, 1]], [[], [2], [1, 2, 3, 4], [1, 1]]),
    's': ([[], [1], [1, 4, 7, 10, 13, 16], [0, 1]], [[], [2], [2, 3, 4, 5, 5, 5], [1, 1]]),
    'b': ([[], [1], [2, 5, 8, 11, 14, 17, 20], [2]], [[], [2], [3, 3, 4, 5, 5, 5, 5], [3]]),
}


def _arch_plans(arch):
    a = SparXMamba.resolve_arch(arch)
    return [ganglion_plan(*args) for args in zip(a['depths'], a['ganglion_strides'], a['ganglion_windows'],
                                                 a['ganglion_starts'], a['cross_stage'])]


@pytest.mark.parametrize('arch', ['t', 's', 'b'])
def test_official_plans(arch):
    layers, widths = EXPECTED[arch]
    plans = _arch_plans(arch)
    assert [list(p.ganglion_layers) for p in plans] == layers
    assert [[p.num_inputs(j) for j in p.ganglion_layers] for p in plans] == widths


@pytest.mark.parametrize('arch', ['t', 's', 'b'])
def test_built_modules_follow_the_plan(arch):
    """The DMCA of every ganglion layer is built for the width the plan concatenates."""
    model = SparXMamba(arch)
    layers, widths = EXPECTED[arch]
    for stage, stage_layers, stage_widths, dim in zip(model.layers, layers, widths, model.dims):
        built = {j: b.dmca.shortcut_channels // dim for j, b in enumerate(stage.blocks) if b.dmca is not None}
        assert built == dict(zip(stage_layers, stage_widths))


def test_t_stage3_sources_in_order():
    """SPEC section 3: T stage 3 layers see [s], [out1, out0], [out3, out0, out2], [out5, out0, out2, out4]."""
    plan = _arch_plans('t')[2]
    assert plan.sources == {0: (STAGE_INPUT,), 2: (1, 0), 4: (3, 0, 2), 6: (5, 0, 2, 4)}


def test_stride_window_start_and_cross_stage():
    plan = ganglion_plan(depth=8, stride=3, window=1, start=0)
    assert plan.ganglion_layers == (1, 4, 7)
    assert plan.sources == {1: (STAGE_INPUT, 0), 4: (2, 3, 1), 7: (5, 6, 4)}
    # cross_stage: the stage input sits in the ganglion window until M newer ganglia push it out.
    plan = ganglion_plan(depth=5, stride=2, window=2, start=0, cross_stage=True)
    assert plan.sources == {0: (STAGE_INPUT,), 2: (1, STAGE_INPUT, 0), 4: (3, 0, 2)}
    assert ganglion_plan(depth=3, start=None).ganglion_layers == ()
    assert ganglion_plan(depth=3, start=100).ganglion_layers == ()
    # S = 1 without a window: every layer aggregates all earlier ganglion layers; the stage input is
    # pending only for the first one.
    plan = ganglion_plan(depth=4, stride=1, window=None, start=0)
    assert plan.sources == {0: (STAGE_INPUT,), 1: (0,), 2: (0, 1), 3: (0, 1, 2)}


def test_last_uses_release_features():
    plan = _arch_plans('t')[2]
    assert plan.last_uses() == {STAGE_INPUT: 0, 1: 2, 0: 6, 3: 4, 2: 6, 5: 6, 4: 6}


@pytest.mark.parametrize('kwargs, match', [
    (dict(depth=0), 'depth must be an int >= 1'),
    (dict(depth=4, stride=0), r'stride \(S\) must be an int >= 1'),
    (dict(depth=4, window=0), r'window \(M\) must be an int >= 1 or None'),
    (dict(depth=4, start=-1), 'start must be an int >= 0 or None'),
    (dict(depth=4, cross_stage='yes'), 'cross_stage must be a bool'),
])
def test_plan_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ganglion_plan(**kwargs)
