"""Regression test against recorded outputs of the official SparX-Mamba code (github.com/LMMMEng/SparX).

tests/data/official_tiny_outputs.pt holds small official-config models (classification and Mask R-CNN
backbone files) with seeded random weights, their inputs and the outputs the official code produced; see
tests/data/README.md for how it was made. Here the official state dicts go through this project's key
converter, load strictly into SparXMamba (+ SparXClsHead) and must reproduce the recorded outputs. Neither
the official code nor its CUDA / Triton extensions are needed.
"""
from pathlib import Path

import pytest
import torch

from sparx_mm.models.backbones.sparx_mamba import SparXMamba
from sparx_mm.models.checkpoint import convert_official
from sparx_mm.models.heads import SparXClsHead

FIXTURE = Path(__file__).resolve().parents[1] / 'data' / 'official_tiny_outputs.pt'
# float32 on CPU: the official run and ours differ only in reduction orders (observed ~1e-7 relative).
RTOL = 1e-5
ATOL_REL = 1e-5  # absolute tolerance, as a fraction of the largest |value| of the reference tensor


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


def unpack(packed):
    """The fixture's packed state dict (see tests/data/README.md) -> {key: tensor} in key order."""
    state, offset = {}, 0
    data = packed['float_data'].float()
    for key, shape in zip(packed['float_keys'], packed['float_shapes']):
        numel = int(torch.Size(shape).numel())
        state[key] = data[offset:offset + numel].reshape(shape).clone()
        offset += numel
    assert offset == data.numel()
    state.update({key: torch.tensor(value) for key, value in packed['int_buffers'].items()})
    return state


def assert_matches(actual, expected, what):
    assert actual.shape == expected.shape, f'{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}'
    scale = expected.abs().max().item()
    assert scale > 0, f'{what}: degenerate reference'
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL_REL * scale, msg=lambda m: f'{what}: {m}')


def build_classifier(fx):
    kind, converted = convert_official(unpack(fx['cls_state_dict']))
    assert kind == 'classification'
    assert all(k.startswith(('backbone.', 'head.')) for k in converted)
    backbone = SparXMamba(fx['arch'], out_indices=(3, ), out_norm=None)
    head = SparXClsHead(fx['num_classes'], backbone.dims[-1])
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in converted.items() if k.startswith('backbone.')},
                             strict=True)
    head.load_state_dict({k[len('head.'):]: v for k, v in converted.items() if k.startswith('head.')}, strict=True)
    return backbone.eval(), head.eval()


def build_detection_backbone(fx):
    official = {'backbone.' + k: v for k, v in unpack(fx['det_state_dict']).items()}  # as in mmdet checkpoints
    kind, converted = convert_official(official)
    assert kind == 'detection'
    backbone = SparXMamba(fx['arch'], dmca_scale='learnable')
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in converted.items()}, strict=True)
    return backbone


def test_fixture_exercises_what_it_should(official):
    fx = official
    settings = SparXMamba.resolve_arch(fx['arch'])
    # channel padding of 1 and of 2 channels (d_inner = 2 * dim not a multiple of 3) in ganglion stages
    padded = {2 * d % 3 for d, start in zip(settings['dims'], settings['ganglion_starts']) if start is not None}
    assert {1, 2} <= padded
    assert settings['stem'] == 'v2'
    assert any(k.endswith('.op.scale') for k in fx['det_state_dict']['float_keys'])


def test_classification_logits_match_official(official):
    backbone, head = build_classifier(official)
    with torch.no_grad():
        for name, logits in (('input', 'cls_logits'), ('input_odd', 'cls_logits_odd')):
            out = head(backbone(official[name].float()))
            assert_matches(out, official[logits], f'classification logits on {name}')


def test_classification_input_gradient_matches_official(official):
    backbone, head = build_classifier(official)
    x = official['input_odd'].float().requires_grad_(True)
    (head(backbone(x)) * official['cls_grad_weight']).sum().backward()
    assert_matches(x.grad, official['cls_input_grad_odd'], 'classification d loss / d input')


@pytest.mark.parametrize('name,feats', [('input', 'det_feats'), ('input_odd', 'det_feats_odd')])
def test_detection_features_match_official_eval(official, name, feats):
    backbone = build_detection_backbone(official).eval()
    with torch.no_grad():
        outs = backbone(official[name].float())
    assert len(outs) == len(official[feats]) == 4
    for i, (out, ref) in enumerate(zip(outs, official[feats])):
        assert_matches(out, ref, f'detection stage {i} on {name} (eval)')


def test_detection_features_match_official_train(official):
    # Training mode: BatchNorm on batch statistics and the DMCA's explicit softmax with the learnable scale
    # (grad enabled, so the scale keeps its gradient), as the official training branch.
    backbone = build_detection_backbone(official).train()
    outs = backbone(official['input'].float())
    for i, (out, ref) in enumerate(zip(outs, official['det_feats_train'])):
        assert_matches(out.detach(), ref, f'detection stage {i} (train)')
