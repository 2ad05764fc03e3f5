"""tools/misc/make_demo_data.py: layouts the three downstream datasets read, exact masks, determinism."""
import hashlib
import json
import subprocess
import sys

import cv2
import numpy as np

from ..conftest import REPO

CLASSES = ['circle', 'triangle', 'square', 'star']


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob('*') if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_coco_split_masks_are_exact(demo_root):
    from pycocotools import mask as mask_utils
    root = demo_root / 'data/demo/coco'
    for split, expected_images in (('train', 32), ('val', 12)):
        coco = json.loads((root / f'annotations/instances_{split}.json').read_text())
        assert [c['name'] for c in coco['categories']] == CLASSES
        assert len(coco['images']) == expected_images
        per_image = {}
        for ann in coco['annotations']:
            per_image.setdefault(ann['image_id'], []).append(ann)
        assert all(2 <= len(anns) <= 4 for anns in per_image.values()) and len(per_image) == expected_images
        assert {ann['category_id'] for ann in coco['annotations']} == {1, 2, 3, 4}
        for image in coco['images'][:4]:
            img = cv2.imread(str(root / split / image['file_name']))
            assert img.shape == (image['height'], image['width'], 3) == (128, 128, 3)
            for ann in per_image[image['id']]:
                x, y, w, h = ann['bbox']
                assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w > 8 and h > 8
                rle = mask_utils.frPyObjects(ann['segmentation'], 128, 128)
                decoded = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
                # The polygon decodes (pycocotools' rasteriser) to the drawn object's pixels up to edge rounding.
                assert abs(int(decoded.sum()) - ann['area']) <= 0.05 * ann['area'] + 4
                ys, xs = np.nonzero(decoded)
                assert xs.min() >= int(x) - 1 and xs.max() <= x + w and ys.min() >= int(y) - 1 and ys.max() <= y + h


def test_ade_style_segmentation_layout(demo_root):
    root = demo_root / 'data/demo/seg'
    for split, count in (('training', 32), ('validation', 12)):
        images = sorted((root / 'images' / split).glob('*.png'))
        maps = sorted((root / 'annotations' / split).glob('*.png'))
        assert len(images) == len(maps) == count
        assert [p.name for p in images] == [p.name for p in maps]
    labels = set()
    for path in sorted((root / 'annotations/training').glob('*.png')):
        label_map = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert label_map.dtype == np.uint8 and label_map.ndim == 2
        labels |= set(np.unique(label_map).tolist())
    assert labels == {0, 1, 2, 3, 4}  # 0: background (ignored with reduce_zero_label), 1..4: the classes


def test_class_folders(demo_root):
    root = demo_root / 'data/demo/cls'
    for split, count in (('train', 24), ('val', 8)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASSES)
        for name in CLASSES:
            files = sorted((root / split / name).glob('*.png'))
            assert len(files) == count
            assert cv2.imread(str(files[0])).shape == (64, 64, 3)


def test_deterministic_for_a_seed(demo_root, tmp_path):
    script = str(REPO / 'tools/misc/make_demo_data.py')
    for seed in (0, 1):
        subprocess.run([sys.executable, script, '--out', str(tmp_path / f'seed{seed}'), '--seed', str(seed)],
                       check=True, capture_output=True)
    same = _digest(demo_root / 'data/demo')
    assert _digest(tmp_path / 'seed0') == same
    assert _digest(tmp_path / 'seed1') != same


def test_train_scale_multiplies_only_the_training_splits(tmp_path):
    sys.path.insert(0, str(REPO / 'tools/misc'))
    try:
        import make_demo_data
    finally:
        sys.path.pop(0)
    assert make_demo_data.split_sizes(8) == dict(coco=dict(train=256, val=12), seg=dict(training=256, validation=12),
                                                 cls=dict(train=192, val=8))
    script = str(REPO / 'tools/misc/make_demo_data.py')
    out = subprocess.run([sys.executable, script, '--out', str(tmp_path / 'x2'), '--train-scale', '2'],
                         capture_output=True, text=True, check=True)
    assert '76 segmentation images' in out.stdout
    assert len(list((tmp_path / 'x2/seg/images/training').glob('*.png'))) == 64
    assert len(list((tmp_path / 'x2/cls/train/star').glob('*.png'))) == 48
    bad = subprocess.run([sys.executable, script, '--out', str(tmp_path / 'x0'), '--train-scale', '0'],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and '--train-scale must be >= 1, got 0' in bad.stderr
