"""Write the bundled demo data sets: procedurally drawn shape scenes, deterministic for a given seed.

Usage::

    python tools/misc/make_demo_data.py [--out data/demo] [--seed 0]

Three data sets of the same kind of scene (filled shapes of four classes on textured, noisy backgrounds),
one per downstream task, under ``--out``:

* ``coco/``: COCO instances (mmdet ``CocoDataset``): ``annotations/instances_{train,val}.json`` and
  ``{train,val}/*.png``; 32 / 12 images of 128 x 128 with 2-4 objects each, a box and a polygon mask per
  object.
  Objects never overlap, so each polygon is the object's whole visible outline (circles are 32-gons),
  and an object's pixels are exactly those whose centres lie inside its polygon (COCO's convention).
* ``seg/``: ADE20K layout (mmseg ``BaseSegDataset``): ``images/{training,validation}/*.png`` and
  ``annotations/{training,validation}/*.png`` (uint8 label maps), 32 / 12 scenes like the COCO ones. As in
  ADE20K, label 0 is
  background / unlabelled and ignored (``reduce_zero_label=True`` maps it to 255), and labels 1..4 are the
  classes below, which become 0..3.
* ``cls/``: ImageNet-style class folders (mmpretrain ``CustomDataset``): ``{train,val}/<class>/*.png``,
  24 / 8 images a class, 64 x 64, one shape each.

Classes: circle, triangle, square, star, in this order for the COCO category ids 1-4 and the segmentation
labels 1-4 (CustomDataset numbers the class folders alphabetically). Colours are random, so only the
geometry tells the classes apart. Only numpy and OpenCV are used; the same seed gives byte-identical files.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys

import cv2
import numpy as np

CLASSES = ('circle', 'triangle', 'square', 'star')
PALETTE = [(220, 60, 60), (60, 180, 75), (60, 100, 220), (240, 200, 40)]
#: images per split: detection / segmentation scenes, and classification images per class.
SPLITS = dict(coco=dict(train=32, val=12), seg=dict(training=32, validation=12), cls=dict(train=24, val=8))
SCENE_SIZE = 128
CLS_SIZE = 64


# ---------------------------------------------------------------------------------------------- drawing
def shape_polygon(kind, cx, cy, r, angle):
    """(K, 2) float vertices of a shape of circumradius r centred at (cx, cy), rotated by angle (rad)."""
    if kind == 'circle':
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        radii = np.full_like(t, r)
    elif kind == 'triangle':
        t = np.linspace(0, 2 * np.pi, 3, endpoint=False)
        radii = np.full_like(t, r)
    elif kind == 'square':
        t = np.linspace(0, 2 * np.pi, 4, endpoint=False) + np.pi / 4
        radii = np.full_like(t, r)
    elif kind == 'star':
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    else:
        raise ValueError(kind)
    t = t + angle
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def background(rng, size):
    """Textured, noisy background: smooth colour noise, a random grating and per-pixel noise (uint8 BGR)."""
    grey = rng.uniform(70, 180, size=(4, 4, 1))
    coarse = (grey + rng.uniform(-30, 30, size=(4, 4, 3))).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
    grating = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    img += rng.uniform(5, 20) * grating[..., None]
    img += rng.normal(0, 8, size=img.shape).astype(np.float32)
    return img


def object_colour(rng):
    """A saturated colour (BGR) that stands out from the mid-grey backgrounds."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(170, 256), rng.integers(170, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def fill(polygon, size):
    """Boolean mask of the pixels whose centres lie inside the polygon (even-odd rule).

    COCO's convention: pixel (x, y) covers [x, x + 1) x [y, y + 1), so its centre is (x + 0.5, y + 0.5); a
    mask drawn this way is what the polygon annotation describes, up to pycocotools' rounding on edges.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    inside = np.zeros((size, size), bool)
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0)):
        if y1 == y2:
            continue
        crosses = (y1 > ys) != (y2 > ys)
        x_cross = x1 + (ys - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (xs < x_cross)
    return inside


def finish(img, rng):
    img = img + rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def draw_scene(rng, size=SCENE_SIZE, min_objects=2, max_objects=4, r_range=(12, 28)):
    """An image with non-overlapping shapes; returns (image, [(class index, polygon, mask), ...])."""
    img = background(rng, size)
    objects, discs = [], []
    wanted = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(200):
        if len(objects) == wanted:
            break
        r = rng.uniform(*r_range)
        cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
        if any(np.hypot(cx - x, cy - y) < r + q + 3 for x, y, q in discs):
            continue
        label = int(rng.integers(len(CLASSES)))
        polygon = shape_polygon(CLASSES[label], cx, cy, r, rng.uniform(0, 2 * np.pi))
        mask = fill(polygon, size)
        img[mask] = object_colour(rng) + rng.normal(0, 10, size=(int(mask.sum()), 3)).astype(np.float32)
        discs.append((cx, cy, r))
        objects.append((label, polygon, mask))
    return finish(img, rng), objects


def draw_single(rng, label, size=CLS_SIZE):
    """A classification image: one shape of the given class, roughly centred."""
    img = background(rng, size)
    r = rng.uniform(0.25, 0.42) * size
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08, size=2) * size
    polygon = shape_polygon(CLASSES[label], cx, cy, r, rng.uniform(0, 2 * np.pi))
    mask = fill(polygon, size)
    img[mask] = object_colour(rng) + rng.normal(0, 10, size=(int(mask.sum()), 3)).astype(np.float32)
    return finish(img, rng)


def write_png(path, array):
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, array):
        raise OSError(f'could not write {path}')


# ---------------------------------------------------------------------------------------------- data sets
def make_coco(root, rng, splits):
    for split, count in splits.items():
        images, annotations = [], []
        for i in range(count):
            img, objects = draw_scene(rng)
            name = f'{split}_{i:04d}.png'
            write_png(osp.join(root, split, name), img)
            images.append(dict(id=i + 1, file_name=name, height=img.shape[0], width=img.shape[1]))
            for label, polygon, mask in objects:
                x0, y0 = polygon.min(axis=0)
                x1, y1 = polygon.max(axis=0)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=i + 1, category_id=label + 1, iscrowd=0,
                    bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                    area=float(mask.sum()),
                    segmentation=[[round(float(v), 2) for v in polygon.reshape(-1)]]))
        categories = [dict(id=k + 1, name=name, supercategory='shape') for k, name in enumerate(CLASSES)]
        os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def make_seg(root, rng, splits):
    for split, count in splits.items():
        for i in range(count):
            img, objects = draw_scene(rng)
            label_map = np.zeros(img.shape[:2], np.uint8)  # 0: background, ignored (reduce_zero_label)
            for label, _, mask in objects:
                label_map[mask] = label + 1
            write_png(osp.join(root, 'images', split, f'{split}_{i:04d}.png'), img)
            write_png(osp.join(root, 'annotations', split, f'{split}_{i:04d}.png'), label_map)


def make_cls(root, rng, splits):
    for split, count in splits.items():
        for i in range(count):
            for label, name in enumerate(CLASSES):
                write_png(osp.join(root, split, name, f'{i:04d}.png'), draw_single(rng, label))


TRAIN_SPLITS = ('train', 'training')


def split_sizes(train_scale=1):
    """Images per split of each data set, the training splits multiplied by ``train_scale``."""
    if not isinstance(train_scale, int) or train_scale < 1:
        raise ValueError(f'train_scale must be an integer >= 1, got {train_scale!r}')
    return {task: {split: count * train_scale if split in TRAIN_SPLITS else count
                   for split, count in splits.items()} for task, splits in SPLITS.items()}


def make_demo_data(out='data/demo', seed=0, train_scale=1):
    """Write all three data sets under ``out`` (replacing earlier ones); returns ``out``.

    ``train_scale`` multiplies the training splits (validation splits stay as they are): the default sizes
    suit a few CPU iterations; longer GPU runs need more scenes than the models can memorise.
    """
    sizes = split_sizes(train_scale)
    cv2.setNumThreads(1)
    for index, (task, maker) in enumerate((('coco', make_coco), ('seg', make_seg), ('cls', make_cls))):
        root = osp.join(out, task)
        if osp.isdir(root):
            shutil.rmtree(root)
        # One generator per data set, so each is the same whatever the others hold.
        maker(root, np.random.default_rng([seed, index]), sizes[task])
    with open(osp.join(out, 'README.txt'), 'w') as f:
        f.write(f'Written by tools/misc/make_demo_data.py --seed {seed} --train-scale {train_scale}; classes: {", ".join(CLASSES)}.\n'
                'coco/: COCO instances; seg/: ADE20K layout, label 0 = background (ignored), 1..4 = classes; '
                'cls/: class folders.\n')
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Write the demo COCO, ADE20K-style and class-folder data.')
    parser.add_argument('--out', default='data/demo', help='output folder (default: data/demo)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    parser.add_argument('--train-scale', type=int, default=1,
                        help='multiply the training splits by this (default: 1; e.g. 8 for GPU runs)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.train_scale < 1:
        print(f'--train-scale must be >= 1, got {args.train_scale}', file=sys.stderr)
        return 2
    out = make_demo_data(args.out, args.seed, args.train_scale)
    sizes = split_sizes(args.train_scale)
    counts = {task: sum(sizes[task].values()) * (len(CLASSES) if task == 'cls' else 1) for task in sizes}
    print(f'demo data written to {out}: {counts["coco"]} COCO images, {counts["seg"]} segmentation images, '
          f'{counts["cls"]} classification images (classes: {", ".join(CLASSES)})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
