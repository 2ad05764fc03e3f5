"""One command for a demo: make the demo data if it is missing, train the demo config on the CPU, test
the last checkpoint and print its metrics.

    python tools/misc/run_demo.py [detection|segmentation|classification] [--work-dir DIR] [--threads N]

detection (the default): Mask R-CNN + SparX-Mamba-T on the shapes COCO data, prints bbox / segm AP;
segmentation: UperNet + SparX-Mamba-T, prints mIoU; classification: SparX-Mamba-T, prints top-1 accuracy.
Everything is from scratch, for a few minutes on two CPU cores: the metrics show the pipeline works, not
what the model can learn. Arguments after ``--`` go to tools/train.py, e.g.
``-- --cfg-options train_cfg.max_epochs=6``.
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMOS = dict(
    detection=('configs/demo/maskrcnn_sparx_t_demo.py', ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP']),
    segmentation=('configs/demo/upernet_sparx_t_demo.py', ['mIoU', 'mAcc', 'aAcc']),
    classification=('configs/demo/sparx_t_demo_cls.py', ['accuracy/top1']),
)
# No validation while training (mmengine's loops would validate after the last iteration / epoch whatever
# val_interval says): the test after it evaluates the same images once.
NO_VAL = ['val_dataloader=None', 'val_cfg=None', 'val_evaluator=None']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('task', nargs='?', default='detection', choices=sorted(DEMOS))
    parser.add_argument('--work-dir', help='default: work_dirs/demo_TASK in the repository')
    parser.add_argument('--data', default='data/demo',
                        help='demo data folder (made if missing; default: data/demo in the repository)')
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads for torch (default 1: on a small machine shared with other work, '
                             'more threads are slower; 0 = torch\'s default)')
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = []
    if '--' in argv:
        i = argv.index('--')
        argv, train_args = argv[:i], argv[i + 1:]
    args = parser.parse_args(argv)
    args.train_args = train_args
    return args


def run(cmd, env):
    """Run a command, echoing its output; return (exit code, output)."""
    print('+ ' + ' '.join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    return proc.wait(), ''.join(lines)


def main(argv=None):
    args = parse_args(argv)
    config, keys = DEMOS[args.task]
    # The tools run in the repository; paths given on the command line are relative to where we are.
    work_dir = osp.abspath(args.work_dir) if args.work_dir else osp.join('work_dirs', f'demo_{args.task}')
    data = args.data if args.data == 'data/demo' else osp.abspath(args.data)
    env = dict(os.environ)
    env.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    if args.threads > 0:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(args.threads)
    python = sys.executable
    other_data = osp.normpath(data) != osp.normpath('data/demo')
    start = time.time()

    if not all(osp.isdir(osp.join(REPO, data, sub)) for sub in ('coco', 'seg', 'cls')):
        code, _ = run([python, 'tools/misc/make_demo_data.py', '--out', data], env)
        if code:
            return code
    # Several --cfg-options add up (mmengine's DictAction), so the user's come last and win.
    train_cmd = [python, 'tools/train.py', config, '--work-dir', work_dir,
                 '--cfg-options', *NO_VAL, *(data_root_options(args.task, data, 'train') if other_data else []),
                 *args.train_args]
    code, _ = run(train_cmd, env)
    if code:
        return code
    train_seconds = time.time() - start
    with open(osp.join(REPO, work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    test_cmd = [python, 'tools/test.py', config, checkpoint, '--work-dir', work_dir]
    if other_data:
        test_cmd += ['--cfg-options', *data_root_options(args.task, data, 'test')]
    code, text = run(test_cmd, env)
    if code:
        return code
    results = {}
    for key in keys:
        found = re.findall(rf'(?<![\w/]){re.escape(key)}: (\S+)', text)
        if found:
            results[key] = found[-1]
    total = time.time() - start
    print(f'\n{args.task} demo ({config}): train {train_seconds / 60:.1f} min, train + test {total / 60:.1f} min; '
          f'checkpoint {checkpoint}')
    print('RESULT ' + '  '.join(f'{key}: {value}' for key, value in results.items()))
    return 0


def data_root_options(task, data, split):
    """--cfg-options that point a demo config's train or test split at demo data written somewhere else than
    data/demo."""
    if task == 'detection':
        root = osp.join(data, 'coco') + '/'
        options = [f'{split}_dataloader.dataset.data_root={root}']
        if split == 'test':
            options.append(f'test_evaluator.ann_file={root}annotations/instances_val.json')
        return options
    return [f'{split}_dataloader.dataset.data_root={osp.join(data, "seg" if task == "segmentation" else "cls")}']


if __name__ == '__main__':
    sys.exit(main())
