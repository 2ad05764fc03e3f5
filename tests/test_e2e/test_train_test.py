"""tools/train.py + tools/test.py on the three demo configs: a few real training iterations, evaluation with
the real metrics, --out, --show-dir, --tta, and resuming."""
import os
import pickle
import shutil

from ..conftest import REPO
from .conftest import CONFIGS, FAST, TEST, TRAIN, assert_finite, check_ok, metric, run_tool

NO_VAL = ['val_dataloader=None', 'val_cfg=None', 'val_evaluator=None']


def test_detection_train_and_test(trained, demo_root, tmp_path):
    work_dir, ckpt, text = trained('det')
    assert 'Epoch(train) [1][2/2]' in text
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert_finite(metric(text, key, 'val'))

    out = tmp_path / 'det.pkl'
    proc = run_tool(TEST, CONFIGS['det'], ckpt, '--work-dir', tmp_path / 'test', '--out', out,
                    '--cfg-options', *FAST['det'], cwd=demo_root)
    text = check_ok(proc)
    assert 0 <= assert_finite(metric(text, 'coco/bbox_mAP', 'test')) <= 1
    assert_finite(metric(text, 'coco/segm_mAP', 'test'))
    results = pickle.loads(out.read_bytes())
    assert len(results) == 2 and {'pred_instances', 'img_id'} <= set(results[0])
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(results[0]['pred_instances'])


def test_segmentation_train_and_test(trained, demo_root, tmp_path):
    work_dir, ckpt, text = trained('seg')
    assert 'Iter(train) [2/2]' in text
    assert 0 <= assert_finite(metric(text, 'mIoU', 'val')) <= 100

    out, show_dir = tmp_path / 'seg.pkl', tmp_path / 'vis'
    proc = run_tool(TEST, CONFIGS['seg'], ckpt, '--work-dir', tmp_path / 'test', '--out', out,
                    '--show-dir', show_dir, '--cfg-options', *FAST['seg'], cwd=demo_root)
    text = check_ok(proc)
    assert 0 <= assert_finite(metric(text, 'mIoU', 'test')) <= 100
    results = pickle.loads(out.read_bytes())
    assert len(results) == 2 and tuple(results[0]['pred_sem_seg']['data'].shape) == (1, 128, 128)
    assert len(list(show_dir.rglob('*.png'))) == 2


def test_classification_train_and_test(trained, demo_root, tmp_path):
    work_dir, ckpt, text = trained('cls')
    assert 'Epoch(train) [1][2/2]' in text
    assert 0 <= assert_finite(metric(text, 'accuracy/top1', 'val')) <= 100

    out = tmp_path / 'cls.pkl'
    proc = run_tool(TEST, CONFIGS['cls'], ckpt, '--work-dir', tmp_path / 'test', '--out', out, '--tta',
                    '--cfg-options', *FAST['cls'], cwd=demo_root)
    text = check_ok(proc)
    assert 0 <= assert_finite(metric(text, 'accuracy/top1', 'test')) <= 100
    results = pickle.loads(out.read_bytes())
    assert len(results) == 4 and tuple(results[0]['pred_score'].shape) == (4, )


def test_resume_iteration_based(trained, demo_root, tmp_path):
    """Segmentation (iteration-based): the session's run trained 2 iterations with a checkpoint after each;
    rerun in (a copy of) its work dir with 3 iterations and a bare --resume: it continues from iteration 2,
    the work dir's last checkpoint, and finishes."""
    src_dir, ckpt, _ = trained('seg')
    assert (src_dir / 'iter_1.pth').is_file() and ckpt == str(src_dir / 'iter_2.pth')
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    try:
        os.link(ckpt, work_dir / 'iter_2.pth')
    except OSError:
        shutil.copy(ckpt, work_dir / 'iter_2.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))

    text = check_ok(run_tool(TRAIN, CONFIGS['seg'], '--work-dir', work_dir, '--resume', '--cfg-options',
                             *FAST['seg'], 'train_cfg.max_iters=3', *NO_VAL, cwd=demo_root))
    assert f'Auto resumed from the latest checkpoint {work_dir / "iter_2.pth"}' in text
    assert 'resumed epoch: 0, iter: 2' in text
    assert 'Iter(train) [3/3]' in text and 'Iter(train) [1/3]' not in text
    assert (work_dir / 'iter_3.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / 'iter_3.pth')


def test_resume_epoch_based_from_a_path(trained, demo_root, tmp_path):
    """Classification (epoch-based): --resume CHECKPOINT continues after that checkpoint's epoch."""
    _, ckpt, _ = trained('cls')
    text = check_ok(run_tool(TRAIN, CONFIGS['cls'], '--work-dir', tmp_path / 'work', '--resume', ckpt,
                             '--cfg-options', *FAST['cls'], 'train_cfg.max_epochs=2', *NO_VAL,
                             cwd=demo_root))
    assert 'resumed epoch: 1, iter: 2' in text
    assert 'Epoch(train) [2][2/2]' in text and 'Epoch(train) [1][' not in text
    assert (tmp_path / 'work' / 'epoch_2.pth').is_file()


def test_run_demo_one_command(demo_root, tmp_path):
    """tools/misc/run_demo.py (README's demo command), on the classification demo cut to one short epoch."""
    proc = run_tool(REPO / 'tools/misc/run_demo.py', 'classification', '--work-dir', tmp_path / 'work',
                    '--data', demo_root / 'data/demo', '--', '--cfg-options', 'train_cfg.max_epochs=1',
                    'train_dataloader.batch_size=2', 'train_dataloader.dataset.indices=[0,24,48,72]',
                    cwd=tmp_path)
    text = check_ok(proc)
    assert 'Epoch(train) [1][2/2]' in text and 'Epoch(val)' not in text  # validation left to the test
    result = [line for line in text.splitlines() if line.startswith('RESULT ')]
    assert len(result) == 1 and 0 <= assert_finite(metric(result[0], 'accuracy/top1')) <= 100
