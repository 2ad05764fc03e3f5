"""Reading official SparX checkpoints (and this project's) into SparXMamba.

Official checkpoints come in three kinds, recognised from their keys:

* classification (ImageNet release files): a bare state dict with ``classifier.{0,3}.*`` (GroupNorm and
  Linear of the head);
* detection (Mask R-CNN): an mmdet checkpoint whose ``backbone.*`` keys carry per-stage output norms
  ``norm.{0..3}`` and a learnable DMCA scale ``op.scale`` per ganglion layer;
* segmentation (UperNet): an mmseg checkpoint whose ``backbone.*`` keys carry ``norm.{0..3}`` and no scales.

Only the DMCA and output-norm keys differ from this project's names; :func:`rename_official_key` maps them
and leaves this project's own keys unchanged, so every loader can apply it blindly.
"""
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

# (official pattern, this project's replacement); applied to backbone keys without prefix.
_RENAMES = [
    (re.compile(r'^norm\.(\d+)\.'), r'out_norms.\1.'),
    (re.compile(r'\.op\.d_norm\.'), '.dmca.shortcut_norm.'),
    (re.compile(r'\.op\.d_proj\.'), '.dmca.shortcut_proj.'),
    (re.compile(r'\.op\.([qkv])\.'), r'.dmca.\1.'),
    (re.compile(r'\.op\.scale$'), '.dmca.scale'),
    (re.compile(r'\.op\.in_proj\.(\d+)\.'), r'.dmca.fuse.\1.'),
]
_HEAD_RENAMES = {'classifier.0.': 'head.norm.', 'classifier.3.': 'head.fc.'}
_SIGNATURE = ('patch_embed.0.weight', 'layers.0.blocks.0.pos_embed.weight')

KINDS = ('classification', 'detection', 'segmentation')


class CheckpointError(ValueError):
    """A checkpoint that is not a SparX-Mamba checkpoint, or not one that fits the model."""


def rename_official_key(key: str) -> str:
    """Official backbone key -> this project's backbone key (identity for keys already converted)."""
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key)
    return key


def read_checkpoint(path) -> Dict[str, torch.Tensor]:
    """Load a checkpoint file and return its state dict (unwrapping 'state_dict' / 'model' / DDP 'module.')."""
    # weights_only=False: mmengine checkpoints hold non-tensor metadata; only load files you trust.
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    return unwrap_state_dict(ckpt)


def unwrap_state_dict(ckpt) -> Dict[str, torch.Tensor]:
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    for key in ('state_dict', 'model', 'module'):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in ckpt.items())


def _describe_keys(state_dict, limit=6):
    keys = list(state_dict)
    shown = ', '.join(keys[:limit]) + (', ...' if len(keys) > limit else '')
    return f'{len(keys)} keys: {shown}' if keys else 'no keys'


def split_backbone(state_dict) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Separate backbone keys (prefix stripped) from the rest (kept as they are).

    A state dict with ``backbone.*`` keys is a whole mm model; otherwise every key but the official
    classification head is taken as a backbone key.
    """
    if any(k.startswith('backbone.') for k in state_dict):
        backbone = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                               if k.startswith('backbone.'))
        rest = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith('backbone.'))
    else:
        backbone = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith('classifier.'))
        rest = OrderedDict((k, v) for k, v in state_dict.items() if k.startswith('classifier.'))
    if not all(key in backbone for key in _SIGNATURE):
        raise CheckpointError(f'not a SparX-Mamba checkpoint: expected backbone keys such as '
                              f'{list(_SIGNATURE)}, found {_describe_keys(state_dict)}')
    return backbone, rest


def detect_kind(state_dict) -> str:
    """'classification', 'detection' or 'segmentation' for an official SparX-Mamba state dict."""
    backbone, rest = split_backbone(state_dict)
    if any(k.startswith('classifier.') for k in rest):
        return 'classification'
    has_out_norms = any(re.match(r'^(norm|out_norms)\.\d+\.', k) for k in backbone)
    if not has_out_norms:
        raise CheckpointError('a SparX-Mamba backbone with neither a classifier (classification) nor '
                              'per-stage output norms norm.0-3 (Mask R-CNN / UperNet): not an official '
                              f'checkpoint; found {_describe_keys(state_dict)}')
    if any(k.endswith('.op.scale') or k.endswith('.dmca.scale') for k in backbone):
        return 'detection'
    return 'segmentation'


def infer_arch(backbone_state_dict) -> dict:
    """Depths, widths and stem of the SparX-Mamba whose backbone keys are given."""
    depths, dims = {}, {}
    for key, value in backbone_state_dict.items():
        m = re.match(r'^layers\.(\d+)\.blocks\.(\d+)\.pos_embed\.weight$', key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
            dims[stage] = value.shape[0]
    stages = sorted(depths)
    if not stages or stages != list(range(len(stages))):
        raise CheckpointError(f'cannot read the stage layout from {_describe_keys(backbone_state_dict)}')
    return dict(depths=[depths[i] for i in stages], dims=[dims[i] for i in stages],
                stem='v2' if 'patch_embed.6.weight' in backbone_state_dict else 'v1')


def arch_name(arch: dict) -> Optional[str]:
    """'t' / 's' / 'b' when depths, dims and stem match a preset, else None."""
    from .backbones.sparx_mamba import SparXMamba
    for name, preset in SparXMamba.arch_zoo.items():
        if all(list(preset[k]) == list(arch[k]) for k in ('depths', 'dims')) and preset['stem'] == arch['stem']:
            return name
    return None


def _arch_text(arch):
    name = arch_name(arch)
    label = f"SparX-Mamba-{name.upper()}" if name else 'a custom SparX-Mamba'
    return f"{label} (depths {list(arch['depths'])}, dims {list(arch['dims'])}, stem {arch['stem']})"


def convert_official(state_dict) -> Tuple[str, Dict[str, torch.Tensor]]:
    """Official checkpoint -> (kind, this project's whole-model state dict).

    classification -> an mmpretrain ImageClassifier (``backbone.*``, ``head.norm.*``, ``head.fc.*``);
    detection / segmentation -> the mmdet / mmseg model with renamed ``backbone.*`` keys, other keys
    (neck, heads) unchanged.
    """
    kind = detect_kind(state_dict)
    backbone, rest = split_backbone(state_dict)
    converted = OrderedDict(('backbone.' + rename_official_key(k), v) for k, v in backbone.items())
    for key, value in rest.items():
        for old, new in _HEAD_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        converted[key] = value
    return kind, converted


def load_backbone_checkpoint(model, checkpoint, logger=None):
    """Load an official or converted SparX-Mamba checkpoint (path or state dict) into a SparXMamba.

    Keys are renamed on the fly. Keys the model does not have (e.g. another mode's DMCA scales, output
    norms of stages not returned, the classification head) and keys the checkpoint lacks (e.g. output
    norms when starting from an ImageNet checkpoint, as the official detectors do) are reported, not
    fatal. A checkpoint of another architecture or with mismatched shapes raises CheckpointError.
    """
    state_dict = read_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else unwrap_state_dict(checkpoint)
    source = checkpoint if not isinstance(checkpoint, dict) else 'state dict'
    backbone, _ = split_backbone(state_dict)
    backbone = OrderedDict((rename_official_key(k), v) for k, v in backbone.items())

    found = infer_arch(backbone)
    expected = dict(depths=model.depths, dims=model.dims, stem=model.arch_settings['stem'])
    if any(list(found[k]) != list(expected[k]) for k in ('depths', 'dims')) or found['stem'] != expected['stem']:
        raise CheckpointError(f'{source} holds {_arch_text(found)}, but this model is {_arch_text(expected)}; '
                              'pick the arch that matches the checkpoint')

    own = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in backbone.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise CheckpointError(f'{source} does not fit this SparXMamba (arch settings differ): '
                              + '; '.join(mismatched[:5]) + (' ...' if len(mismatched) > 5 else ''))
    result = model.load_state_dict(backbone, strict=False)
    if logger is not None:
        scales_dropped = [k for k in result.unexpected_keys if k.endswith('dmca.scale')]
        if scales_dropped:
            logger.warning(f'{source} has learnable DMCA scales (a Mask R-CNN checkpoint) but the model uses '
                           f"dmca_scale='{model.dmca_scale}': the scales are ignored")
        logger.info(f'loaded {source} into SparXMamba; missing keys: {result.missing_keys or "none"}; '
                    f'unexpected keys: {result.unexpected_keys or "none"}')
    return result
