"""Set-up mistakes end tools/train.py and tools/test.py with one 'error: ...' line and exit code 2."""
import torch

from .conftest import CONFIGS, TEST, TRAIN, check_error, run_tool

TINY_ARCH = dict(depths=[1, 2, 1, 1], dims=[16, 32, 48, 64], ganglion_starts=[None, 1, None, 0])


def _sparx_state_dict(arch, prefix='backbone.', **kwargs):
    from sparx_mm.models import SparXMamba
    return {prefix + k: v for k, v in SparXMamba(arch=arch, **kwargs).state_dict().items()}


def test_missing_config(tmp_path):
    proc = run_tool(TRAIN, tmp_path / 'nope.py', cwd=tmp_path)
    check_error(proc, 'config file not found', 'nope.py')
    proc = run_tool(TEST, tmp_path / 'nope.py', tmp_path / 'x.pth', cwd=tmp_path)
    check_error(proc, 'config file not found')


def test_config_of_another_codebase(tmp_path):
    other = tmp_path / 'ocr.py'
    other.write_text("default_scope = 'mmocr'\nmodel = dict(type='DBNet')\n")
    check_error(run_tool(TRAIN, other, cwd=tmp_path), "default_scope is 'mmocr'", 'mmdet', 'mmseg', 'mmpretrain')
    bare = tmp_path / 'bare.py'
    bare.write_text('model = dict()\n')
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    check_error(run_tool(TEST, bare, ckpt, cwd=tmp_path), 'default_scope is None')


def test_missing_data(tmp_path):
    # No data/demo under the working directory.
    proc = run_tool(TRAIN, CONFIGS['det'], '--work-dir', tmp_path / 'work', cwd=tmp_path)
    check_error(proc, 'train data path does not exist: data/demo/coco/', 'make_demo_data.py',
                '--cfg-options train_dataloader.dataset.data_root=PATH')
    ckpt = tmp_path / 'some.pth'
    torch.save({'state_dict': {}}, ckpt)
    proc = run_tool(TEST, CONFIGS['seg'], ckpt, '--work-dir', tmp_path / 'work',
                    '--cfg-options', 'test_dataloader.dataset.data_root=/nonexistent/seg', cwd=tmp_path)
    check_error(proc, 'test data path does not exist: /nonexistent/seg',
                '--cfg-options test_dataloader.dataset.data_root=PATH')


def test_missing_annotation_file_names_its_option(demo_root, tmp_path):
    proc = run_tool(TRAIN, CONFIGS['det'], '--work-dir', tmp_path / 'work', '--cfg-options',
                    'val_evaluator.ann_file=data/demo/coco/annotations/missing.json', cwd=demo_root)
    check_error(proc, 'val data path does not exist: data/demo/coco/annotations/missing.json',
                '--cfg-options val_evaluator.ann_file=PATH')


def test_unknown_arch(demo_root, tmp_path):
    proc = run_tool(TRAIN, CONFIGS['det'], '--work-dir', tmp_path / 'work',
                    '--cfg-options', 'model.backbone.arch=xl', cwd=demo_root)
    check_error(proc, "SparXMamba: unknown arch 'xl'")


def test_backbone_checkpoint_of_another_variant(demo_root, tmp_path):
    """init_cfg=Pretrained with a checkpoint of another SparX-Mamba variant: our CheckpointError, surfaced as
    one line when training starts (test_tool_common.py covers a checkpoint that is not SparX-Mamba at all)."""
    other_variant = tmp_path / 'tiny.pth'
    torch.save({'state_dict': _sparx_state_dict(TINY_ARCH)}, other_variant)
    proc = run_tool(TRAIN, CONFIGS['cls'], '--work-dir', tmp_path / 'work', '--cfg-options',
                    'model.backbone.init_cfg.type=Pretrained', f'model.backbone.init_cfg.checkpoint={other_variant}',
                    cwd=demo_root)
    check_error(proc, 'checkpoint error', 'dims [16, 32, 48, 64]', 'SparX-Mamba-T')


def test_test_checkpoint_of_another_model(demo_root, tmp_path):
    """tools/test.py refuses checkpoints that do not fit (mmengine would only warn and test random weights)."""
    other_variant = tmp_path / 'tiny.pth'
    torch.save({'state_dict': _sparx_state_dict(TINY_ARCH)}, other_variant)
    proc = run_tool(TEST, CONFIGS['seg'], other_variant, '--work-dir', tmp_path / 'work', cwd=demo_root)
    check_error(proc, 'is of another model or variant', 'tensors have other shapes',
                'backbone.patch_embed.0.weight: checkpoint (8, 3, 3, 3) vs model (48, 3, 3, 3)')

    backbone_only = tmp_path / 'backbone.pth'
    torch.save({'state_dict': _sparx_state_dict('t')}, backbone_only)
    proc = run_tool(TEST, CONFIGS['seg'], backbone_only, '--work-dir', tmp_path / 'work', cwd=demo_root)
    check_error(proc, 'does not hold the whole model', 'decode_head.', 'model.backbone.init_cfg')

    proc = run_tool(TEST, CONFIGS['seg'], tmp_path / 'missing.pth', '--work-dir', tmp_path / 'work', cwd=demo_root)
    check_error(proc, 'checkpoint not found')


def test_resume_checkpoint_of_another_model(demo_root, tmp_path):
    other_variant = tmp_path / 'tiny.pth'
    torch.save({'state_dict': _sparx_state_dict(TINY_ARCH)}, other_variant)
    proc = run_tool(TRAIN, CONFIGS['cls'], '--work-dir', tmp_path / 'work', '--resume', other_variant, cwd=demo_root)
    check_error(proc, '--resume checkpoint', 'is of another model or variant')


def test_amp_without_gpu(demo_root, tmp_path):
    if torch.cuda.is_available():
        return
    proc = run_tool(TRAIN, CONFIGS['cls'], '--work-dir', tmp_path / 'work', '--amp', cwd=demo_root)
    check_error(proc, '--amp needs a GPU')
