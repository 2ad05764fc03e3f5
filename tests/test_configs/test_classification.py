"""The ImageNet configs build, and an official checkpoint converted by the tool gives the official logits."""
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from ..conftest import REPO, official_keys, random_state_dict

CONFIGS = {v: REPO / f'configs/classification/sparx_{v}_in1k.py' for v in 'tsb'}
PARAMS = {'t': 27_051_794, 's': 47_444_712, 'b': 83_536_168}


def _official_logits(official, model, x):
    """The official classifier's maths, written out: GroupNorm(1) -> mean over H, W -> Linear."""
    feat = model.backbone(x)[-1]
    normed = torch.nn.functional.group_norm(feat, 1, official['classifier.0.weight'], official['classifier.0.bias'])
    return normed.mean((2, 3)) @ official['classifier.3.weight'].T + official['classifier.3.bias']


@pytest.mark.parametrize('arch', ['t', 's', 'b'])
def test_config_recipe_and_parameter_count(arch):
    from mmpretrain.apis import init_model
    cfg = Config.fromfile(str(CONFIGS[arch]))
    assert cfg.model.backbone.arch == arch
    assert cfg.optim_wrapper.optimizer.lr == 4e-3 and cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.train_cfg.max_epochs == 310 and cfg.auto_scale_lr.base_batch_size == 2048
    assert cfg.model.backbone.drop_path_rate == {'t': 0.2, 's': 0.3, 'b': 0.5}[arch]
    resize = [step for step in cfg.test_dataloader.dataset.pipeline if step['type'] == 'ResizeEdge'][0]
    assert resize['scale'] == {'t': 248, 's': 235, 'b': 235}[arch]
    model = init_model(cfg, device='cpu')
    assert sum(p.numel() for p in model.parameters()) == PARAMS[arch]


def test_converted_official_checkpoint_gives_official_logits(tmp_path):
    from mmpretrain.apis import init_model
    official = random_state_dict(official_keys('t'), seed=1)
    src, dst = tmp_path / 'sparx_mamba_tiny_in1k.pth', tmp_path / 'sparx_t_in1k_mm.pth'
    torch.save(official, src)
    subprocess.run([sys.executable, str(REPO / 'tools/model_converters/sparx_official_to_mm.py'), str(src), str(dst)],
                   check=True, capture_output=True)
    model = init_model(str(CONFIGS['t']), str(dst), device='cpu')
    # Strict: every key of the converted file fits the config's model and nothing is missing.
    load_checkpoint(model, str(dst), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        expected = _official_logits(official, model, x)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all() and logits.std() > 1e-3
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
