"""Official key lists (SPEC, all nine) convert and load strictly; wrong checkpoints get clear errors."""
import pytest
import torch

from sparx_mm.models.backbones.sparx_mamba import SparXMamba
from sparx_mm.models.checkpoint import (CheckpointError, convert_official, detect_kind, infer_arch,
                                        load_backbone_checkpoint, rename_official_key)
from sparx_mm.models.heads import SparXClsHead

from ..conftest import official_keys, random_state_dict

BACKBONE_KWARGS = dict(classification=dict(out_indices=(3, ), out_norm=None),
                       detection=dict(dmca_scale='learnable'), segmentation=dict())
PREFIX = dict(classification='', detection='det_', segmentation='seg_')


def _split(converted, prefix):
    return {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}


@pytest.mark.parametrize('arch', ['t', 's', 'b'])
@pytest.mark.parametrize('kind', ['classification', 'detection', 'segmentation'])
def test_official_keys_convert_and_load_strictly(arch, kind):
    keys = official_keys(PREFIX[kind] + arch)
    official = random_state_dict(keys)
    if kind != 'classification':  # mm checkpoints hold the whole model, backbone under 'backbone.'
        official = {'backbone.' + k: v for k, v in official.items()}
        official['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    found, converted = convert_official(official)
    assert found == kind
    backbone = SparXMamba(arch, **BACKBONE_KWARGS[kind])
    backbone_sd = _split(converted, 'backbone.')
    result = backbone.load_state_dict(backbone_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(backbone_sd) == len([k for k, _ in keys if not k.startswith('classifier.')])
    # Values travel unchanged: spot-check a DMCA key and a stem key.
    own = backbone.state_dict()
    for key, _ in keys[:3]:
        torch.testing.assert_close(own[rename_official_key(key)], official[PREFIX[kind] and 'backbone.' + key or key])
    if kind == 'classification':
        head = SparXClsHead(1000, backbone.dims[-1])
        head.load_state_dict(_split(converted, 'head.'), strict=True)
        torch.testing.assert_close(head.fc.weight, official['classifier.3.weight'])
    else:
        assert converted['neck.lateral_convs.0.conv.weight'].shape == (1, )


def test_rename_covers_dmca_and_out_norms_and_is_idempotent():
    pairs = {
        'norm.2.weight': 'out_norms.2.weight',
        'layers.2.blocks.0.op.d_norm.weight': 'layers.2.blocks.0.dmca.shortcut_norm.weight',
        'layers.2.blocks.0.op.d_proj.3.bias': 'layers.2.blocks.0.dmca.shortcut_proj.3.bias',
        'layers.2.blocks.0.op.q.0.1.running_mean': 'layers.2.blocks.0.dmca.q.0.1.running_mean',
        'layers.3.blocks.1.op.k.1.weight': 'layers.3.blocks.1.dmca.k.1.weight',
        'layers.2.blocks.0.op.v.0.weight': 'layers.2.blocks.0.dmca.v.0.weight',
        'layers.2.blocks.0.op.scale': 'layers.2.blocks.0.dmca.scale',
        'layers.2.blocks.0.op.in_proj.2.weight': 'layers.2.blocks.0.dmca.fuse.2.weight',
        'layers.2.blocks.1.op.in_proj.weight': 'layers.2.blocks.1.op.in_proj.weight',
        'layers.2.blocks.1.norm.weight': 'layers.2.blocks.1.norm.weight',
    }
    for old, new in pairs.items():
        assert rename_official_key(old) == new
        assert rename_official_key(new) == new


def test_infer_arch_reads_presets():
    for arch in 'tsb':
        found = infer_arch(random_state_dict(official_keys(arch)))
        preset = SparXMamba.arch_zoo[arch]
        assert found == dict(depths=preset['depths'], dims=preset['dims'], stem=preset['stem'])


def test_pretrained_init_cfg_loads_official_classification_checkpoint(tmp_path):
    """Like the official detectors: ImageNet weights, output norms and scales left at their init."""
    official = random_state_dict(official_keys('t'))
    path = tmp_path / 'sparx_mamba_tiny_in1k.pth'
    torch.save(official, path)
    model = SparXMamba('t', dmca_scale='learnable', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    own = model.state_dict()
    torch.testing.assert_close(own['layers.2.blocks.0.dmca.fuse.0.weight'],
                               official['layers.2.blocks.0.op.in_proj.0.weight'])
    torch.testing.assert_close(own['out_norms.0.weight'], torch.ones(96))


def test_pretrained_init_cfg_loads_converted_mm_checkpoint(tmp_path):
    official = {'backbone.' + k: v for k, v in random_state_dict(official_keys('seg_t')).items()}
    _, converted = convert_official(official)
    path = tmp_path / 'upernet.pth'
    torch.save(dict(meta={}, state_dict=converted), path)
    model = SparXMamba('t')
    result = load_backbone_checkpoint(model, str(path))
    assert not result.missing_keys and not result.unexpected_keys


def test_checkpoint_of_another_variant_is_refused(tmp_path):
    path = tmp_path / 't.pth'
    torch.save(random_state_dict(official_keys('t')), path)
    model = SparXMamba('s', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=r'holds SparX-Mamba-T \(depths \[2, 2, 7, 2\].*this model is '
                                              r'SparX-Mamba-S'):
        model.init_weights()


def test_checkpoint_that_is_not_sparx_is_refused(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(1000, 2048)}, path)
    with pytest.raises(CheckpointError, match=r'not a SparX-Mamba checkpoint: expected backbone keys such as '
                                              r"\['patch_embed.0.weight'.*found 2 keys: conv1.weight, fc.weight"):
        load_backbone_checkpoint(SparXMamba('t'), str(path))
    with pytest.raises(CheckpointError, match='not a SparX-Mamba checkpoint'):
        detect_kind({'backbone.conv1.weight': torch.zeros(1)})


def test_shape_mismatch_inside_same_layout_is_refused():
    official = random_state_dict(official_keys('t'))
    official['layers.2.blocks.1.op.x_proj_weight'] = torch.zeros(4 * 9, 640, 1)
    with pytest.raises(CheckpointError, match=r'x_proj_weight: checkpoint \(36, 640, 1\) vs model \(88, 640, 1\)'):
        load_backbone_checkpoint(SparXMamba('t'), official)


def test_backbone_without_head_or_out_norms_is_not_an_official_kind():
    backbone_only = {k: v for k, v in random_state_dict(official_keys('t')).items() if not k.startswith('classifier')}
    with pytest.raises(CheckpointError, match='neither a classifier'):
        detect_kind(backbone_only)
