"""tools/misc/tool_common.py in-process: the checks behind the tools' one-line errors, on cases too slow to
run through a subprocess each."""
import pytest
import torch
from mmengine.config import Config
from torch import nn

from ..conftest import load_tool


@pytest.fixture(scope='module')
def common():
    return load_tool('tools/misc/tool_common.py')


class Tiny(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = nn.Linear(width, 2)
        self.bn = nn.BatchNorm1d(2)


def _save(tmp_path, state, name='ckpt.pth'):
    path = tmp_path / name
    torch.save({'state_dict': state, 'meta': {}}, path)
    return str(path)


def test_checkpoint_fits(common, tmp_path):
    own = Tiny().state_dict()
    common.check_checkpoint_fits(Tiny(), _save(tmp_path, own))
    # DDP's 'module.' prefix is understood.
    common.check_checkpoint_fits(Tiny(), _save(tmp_path, {'module.' + k: v for k, v in own.items()}))
    # Missing buffers alone are fine (e.g. num_batches_tracked of older checkpoints).
    common.check_checkpoint_fits(Tiny(), _save(tmp_path, {k: v for k, v in own.items() if 'num_batches' not in k}))


def test_checkpoint_of_another_model(common, tmp_path):
    with pytest.raises(common.ToolError, match="none of this model's keys"):
        common.check_checkpoint_fits(Tiny(), _save(tmp_path, {'conv1.weight': torch.zeros(8, 3, 7, 7)}))
    with pytest.raises(common.ToolError, match=r'1 tensors have other shapes \(fc.weight: checkpoint \(2, 8\) vs'):
        common.check_checkpoint_fits(Tiny(), _save(tmp_path, Tiny(width=8).state_dict()))
    partial = {k: v for k, v in Tiny().state_dict().items() if not k.startswith('bn.')}
    with pytest.raises(common.ToolError, match='2 of its parameters are missing'):
        common.check_checkpoint_fits(Tiny(), _save(tmp_path, partial))
    # load_from (fine-tuning) accepts other shapes and missing parts, but not a checkpoint with no key in common.
    common.check_checkpoint_fits(Tiny(), _save(tmp_path, Tiny(width=8).state_dict()), whole_model=False)
    common.check_checkpoint_fits(Tiny(), _save(tmp_path, partial), whole_model=False)
    with pytest.raises(common.ToolError, match='checkpoint not found'):
        common.check_checkpoint_fits(Tiny(), str(tmp_path / 'nope.pth'))


def test_sparx_errors_are_found_in_the_exception_chain(common):
    from sparx_mm.models.checkpoint import CheckpointError, load_backbone_checkpoint
    from sparx_mm.models import SparXMamba

    try:
        try:
            load_backbone_checkpoint(SparXMamba(arch='t'), {'conv1.weight': torch.zeros(1)})
        except CheckpointError as inner:
            raise RuntimeError('while initialising the model') from inner
    except RuntimeError as e:
        message = common.sparx_error_message(e)
    assert message.startswith('checkpoint error: not a SparX-Mamba checkpoint')

    try:
        try:
            SparXMamba(arch='xl')
        except KeyError:
            raise TypeError('class `MaskRCNN`: building the backbone failed')  # implicit __context__
    except TypeError as e:
        assert common.sparx_error_message(e).startswith("SparXMamba: unknown arch 'xl'")
    swin = ValueError("class `ImageClassifier`: SparXSwin: arch 'window_size' must be an int >= 1, got 0")
    assert common.sparx_error_message(swin) == "SparXSwin: arch 'window_size' must be an int >= 1, got 0"
    assert common.sparx_error_message(ValueError('something else')) is None


def test_data_paths_of_wrapped_datasets(common, tmp_path):
    (tmp_path / 'a' / 'imgs').mkdir(parents=True)
    (tmp_path / 'a' / 'ann.json').write_text('{}')
    good = dict(type='CocoDataset', data_root=str(tmp_path / 'a'), ann_file='ann.json', data_prefix=dict(img='imgs/'))
    bad = dict(good, data_prefix=dict(img='missing/'))
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='ConcatDataset', datasets=[dict(type='RepeatDataset', times=2, dataset=good), bad]))))
    with pytest.raises(common.ToolError) as info:
        common.check_data_paths(cfg, ('train', ))
    assert str(info.value).startswith(f'train data path does not exist: {tmp_path / "a" / "missing/"}')
    assert str(info.value).endswith('--cfg-options train_dataloader.dataset.datasets.1.data_prefix.img=PATH')
    cfg.train_dataloader.dataset.datasets = cfg.train_dataloader.dataset.datasets[:1]
    common.check_data_paths(cfg, ('train', ))
    # mmpretrain's ImageNet reads data_root/<split>; remote paths are not checked.
    cfg = Config(dict(test_dataloader=dict(dataset=dict(type='ImageNet', data_root=str(tmp_path), split='val')),
                      val_dataloader=dict(dataset=dict(data_root='s3://bucket/coco'))))
    with pytest.raises(common.ToolError, match='--cfg-options test_dataloader.dataset.split=PATH'):
        common.check_data_paths(cfg, ('val', 'test'))
