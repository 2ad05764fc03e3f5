"""Convert an official SparX-Mamba checkpoint to this project's format.

    python tools/model_converters/sparx_official_to_mm.py SRC DST

SRC is recognised from its keys:
  * ImageNet classification (sparx_mamba_{tiny,small,base}_in1k.pth) -> an mmpretrain ImageClassifier
    checkpoint for configs/classification/sparx_{t,s,b}_in1k.py;
  * Mask R-CNN (maskrcnn_sparx_mamba_*_coco.pth) -> an mmdet checkpoint for configs/detection/maskrcnn_sparx_*;
  * UperNet (upernet_sparx_mamba_*.pth) -> an mmseg checkpoint for configs/segmentation/upernet_sparx_*.
Anything else is refused with a message saying what was found.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.models.checkpoint import (CheckpointError, arch_name, convert_official, infer_arch,  # noqa: E402
                                        read_checkpoint, split_backbone)

SCOPES = dict(classification='mmpretrain', detection='mmdet', segmentation='mmseg')


def convert_file(src: str, dst: str) -> str:
    """Convert SRC into DST; returns a one-line summary."""
    state_dict = read_checkpoint(src)
    kind, converted = convert_official(state_dict)
    arch = infer_arch(split_backbone(state_dict)[0])
    name = arch_name(arch) or 'custom'
    meta = dict(source=os.path.abspath(src), converted_by='sparx_official_to_mm.py', kind=kind, arch=name,
                scope=SCOPES[kind], time=time.strftime('%Y-%m-%d %H:%M:%S'))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save(dict(meta=meta, state_dict=converted), dst)
    return f'{src}: official {kind} checkpoint of SparX-Mamba-{name.upper()} -> {dst} ({len(converted)} tensors, ' \
           f'{SCOPES[kind]} model)'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.src):
        parser.error(f'no such file: {args.src}')
    try:
        print(convert_file(args.src, args.dst))
    except CheckpointError as err:
        print(f'error: {args.src}: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
