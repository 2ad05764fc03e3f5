import subprocess
import sys

import torch

from ..conftest import REPO, official_keys, random_state_dict

TOOL = REPO / 'tools/model_converters/sparx_official_to_mm.py'


def run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True)


def test_converts_detection_checkpoint_keeping_the_rest(tmp_path):
    official = {'backbone.' + k: v for k, v in random_state_dict(official_keys('det_s')).items()}
    official['roi_head.bbox_head.fc_cls.weight'] = torch.ones(81, 1024)
    src, dst = tmp_path / 'maskrcnn.pth', tmp_path / 'out' / 'maskrcnn_mm.pth'
    torch.save(dict(meta=dict(epoch=12), state_dict=official), src)
    result = run_tool(src, dst)
    assert result.returncode == 0, result.stderr
    assert 'official detection checkpoint of SparX-Mamba-S' in result.stdout
    converted = torch.load(dst, weights_only=False)
    assert converted['meta']['kind'] == 'detection' and converted['meta']['scope'] == 'mmdet'
    state = converted['state_dict']
    assert 'backbone.layers.2.blocks.1.dmca.scale' in state and 'backbone.out_norms.3.weight' in state
    assert torch.equal(state['roi_head.bbox_head.fc_cls.weight'], torch.ones(81, 1024))


def test_segmentation_checkpoint_is_recognised(tmp_path):
    official = {'backbone.' + k: v for k, v in random_state_dict(official_keys('seg_b')).items()}
    src = tmp_path / 'upernet.pth'
    torch.save(dict(state_dict=official), src)
    result = run_tool(src, tmp_path / 'upernet_mm.pth')
    assert result.returncode == 0 and 'official segmentation checkpoint of SparX-Mamba-B' in result.stdout


def test_foreign_checkpoint_gets_a_clear_error(tmp_path):
    src = tmp_path / 'resnet50.pth'
    torch.save({'conv1.weight': torch.zeros(2), 'layer1.0.conv1.weight': torch.zeros(2)}, src)
    result = run_tool(src, tmp_path / 'x.pth')
    assert result.returncode == 2
    assert 'not a SparX-Mamba checkpoint' in result.stderr and 'found 2 keys: conv1.weight' in result.stderr
    assert not (tmp_path / 'x.pth').exists()


def test_missing_source_file(tmp_path):
    result = run_tool(tmp_path / 'nope.pth', tmp_path / 'x.pth')
    assert result.returncode == 2 and 'no such file' in result.stderr
