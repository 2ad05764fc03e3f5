"""What tools/train.py and tools/test.py share: the downstream package of a config, checks that turn the
usual set-up mistakes into one-line errors, and checkpoint checks.

Import this module before torch: it sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which torch >= 2.6 needs to
load mmengine checkpoints (they hold non-tensor metadata), and puts the repository root on ``sys.path``.
"""
import os
import os.path as osp
import re
import sys

os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

#: default_scope -> the package whose register_all_modules makes its components known.
SCOPES = {'mmdet': 'mmdet', 'mmseg': 'mmseg', 'mmpretrain': 'mmpretrain'}
ERROR_EXIT_CODE = 2


class ToolError(Exception):
    """A mistake in the command line, the config or the files it names: reported in one line."""


def run_main(main):
    """Call ``main()``; a ToolError (or an error of ours found in the cause chain of another exception)
    becomes ``error: ...`` on stderr and exit code 2, with no traceback."""
    try:
        code = main()
    except ToolError as e:
        return _fail(str(e))
    except Exception as e:  # noqa: BLE001 (re-raised unless it is one of ours)
        message = sparx_error_message(e)
        if message is None:
            raise
        return _fail(message)
    return code or 0


def _fail(message):
    sys.stderr.write(f'error: {message}\n')
    sys.stderr.flush()
    return ERROR_EXIT_CODE


def _message(exc):
    # KeyError's str() is the repr of its argument; the argument itself reads better.
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


#: Our backbones' errors name the class first: 'SparXMamba: unknown arch ...', 'SparXSwin: ...'.
_SPARX_MESSAGE = re.compile(r'\bSparX\w*: ')


def sparx_error_message(exc):
    """The one-line message of the innermost SparX error (CheckpointError, or an error whose message starts
    with a SparX class name and a colon) in ``exc``'s cause / context chain, or None when there is none."""
    try:
        from sparx_mm.models.checkpoint import CheckpointError
    except ImportError:  # pragma: no cover
        CheckpointError = ()
    found, seen = None, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        message = _message(exc)
        if isinstance(exc, CheckpointError):
            found = f'checkpoint error: {message}'
        else:
            match = _SPARX_MESSAGE.search(message)
            if match:
                found = message[match.start():]
        exc = exc.__cause__ or exc.__context__
    return ' '.join(found.split()) if found else None


# ---------------------------------------------------------------------------------------------- config
def load_config(path, cfg_options=None):
    """Config.fromfile with a clear error for a missing file and for a default_scope we cannot serve.
    Returns (cfg, scope); call :func:`register_scope` before building anything from it (it is left out
    here so that the cheap checks come before the slow imports)."""
    if not osp.isfile(path):
        raise ToolError(f'config file not found: {path}')
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ToolError(f'{path}: default_scope is {scope!r}; these tools run configs of '
                        f"{', '.join(repr(s) for s in SCOPES)} (detection, segmentation, classification)")
    return cfg, scope


def register_scope(scope):
    """Register every module of the downstream package (mmdet / mmseg / mmpretrain), make it the default
    scope, and register SparX-Mamba (sparx_mm) in mmengine's root registries."""
    import importlib
    utils = importlib.import_module(f'{SCOPES[scope]}.utils')
    utils.register_all_modules(init_default_scope=True)
    import sparx_mm  # noqa: F401 (registers SparXMamba, SparXClsHead)


def set_work_dir(cfg, config_path, work_dir=None):
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    return cfg.work_dir


def set_launcher(cfg, launcher):
    cfg.launcher = launcher


def has_accelerator():
    """A device that mmengine's AmpOptimWrapper runs on (CUDA / NPU / MLU / MUSA)."""
    from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


def cpu_optim_wrapper_fallback(cfg, logger=print):
    """AmpOptimWrapper needs a GPU (CUDA / NPU / MLU / MUSA); on a machine without one, train in float32."""
    wrapper = cfg.get('optim_wrapper')
    if not wrapper or wrapper.get('type') != 'AmpOptimWrapper' or has_accelerator():
        return False
    wrapper['type'] = 'OptimWrapper'
    for key in ('loss_scale', 'dtype', 'use_fsdp'):
        wrapper.pop(key, None)
    logger('warning: no GPU: the config\'s AmpOptimWrapper (mixed precision) becomes OptimWrapper (float32)')
    return True


# ---------------------------------------------------------------------------------------------- data paths
def _is_remote(path):
    return '://' in str(path)


def _dataset_paths(dataset, option):
    """(path, option to set) pairs of a dataset config, wrappers (RepeatDataset, ConcatDataset, ...)
    included; relative paths are joined to data_root the way mmengine's BaseDataset does."""
    if not isinstance(dataset, dict):
        return []
    pairs = []
    if isinstance(dataset.get('dataset'), dict):
        pairs += _dataset_paths(dataset['dataset'], f'{option}.dataset')
    if isinstance(dataset.get('datasets'), (list, tuple)):
        for i, sub in enumerate(dataset['datasets']):
            pairs += _dataset_paths(sub, f'{option}.datasets.{i}')
    backend_args = dataset.get('backend_args') or {}
    if backend_args.get('backend', 'local') != 'local':
        return pairs
    data_root = dataset.get('data_root')
    if data_root:
        pairs.append((data_root, f'{option}.data_root'))

    def joined(path):
        return path if (not data_root or osp.isabs(path)) else osp.join(data_root, path)

    ann_file = dataset.get('ann_file')
    if isinstance(ann_file, str) and ann_file:
        pairs.append((joined(ann_file), f'{option}.ann_file'))
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, str) and prefix:
        pairs.append((joined(prefix), f'{option}.data_prefix'))
    elif isinstance(prefix, dict):
        for key, value in prefix.items():
            if isinstance(value, str) and value:
                pairs.append((joined(value), f'{option}.data_prefix.{key}'))
    elif not prefix and isinstance(dataset.get('split'), str) and dataset['split'] and data_root:
        # mmpretrain's ImageNet and friends read data_root/<split> when no data_prefix is given.
        pairs.append((joined(dataset['split']), f'{option}.split'))
    return pairs


def _evaluator_paths(evaluator, option):
    if isinstance(evaluator, (list, tuple)):
        return [pair for i, sub in enumerate(evaluator) for pair in _evaluator_paths(sub, f'{option}.{i}')]
    if isinstance(evaluator, dict):
        if isinstance(evaluator.get('metrics'), (list, tuple, dict)):
            return _evaluator_paths(evaluator['metrics'], f'{option}.metrics')
        ann_file = evaluator.get('ann_file')
        if isinstance(ann_file, str) and ann_file:
            return [(ann_file, f'{option}.ann_file')]
    return []


def check_data_paths(cfg, splits):
    """Raise ToolError naming the first data path of the given splits ('train', 'val', 'test') that does
    not exist, and the --cfg-options key that sets it."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or (split != 'train' and f'{split}_cfg' in cfg and cfg[f'{split}_cfg'] is None):
            continue  # no such loop
        pairs = _dataset_paths(loader.get('dataset'), f'{split}_dataloader.dataset')
        pairs += _evaluator_paths(cfg.get(f'{split}_evaluator'), f'{split}_evaluator')
        for path, option in pairs:
            if _is_remote(path) or osp.exists(path):
                continue
            hint = '' if osp.isabs(path) else f' (relative to {os.getcwd()})'
            if '/demo/' in str(path).replace('\\', '/') + '/':
                hint += '; the demo data: python tools/misc/make_demo_data.py'
            raise ToolError(f'{split} data path does not exist: {path}{hint}; set it with '
                            f'--cfg-options {option}=PATH')


# ---------------------------------------------------------------------------------------------- checkpoints
def _bare_model(model):
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def read_state_dict(path):
    from mmengine.runner.checkpoint import _load_checkpoint
    ckpt = _load_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ToolError(f'{path} is not a checkpoint (expected a dict of tensors, got {type(ckpt).__name__})')
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}


def check_checkpoint_fits(model, path, what='checkpoint', whole_model=True):
    """Raise ToolError when the checkpoint at ``path`` cannot be this model's: no key in common, or (with
    ``whole_model``, for testing and resuming) tensors of other shapes or parameters missing. mmengine's own
    loading would only warn and go on with random weights. Without ``whole_model`` (load_from, e.g. a COCO
    detector fine-tuned on other classes) only a checkpoint with no key of the model is refused."""
    import torch
    if not _is_remote(path) and not osp.isfile(path):
        raise ToolError(f'{what} not found: {path}')
    state = read_state_dict(path)
    own = _bare_model(model).state_dict()
    params = {name for name, _ in _bare_model(model).named_parameters()}
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    common = [k for k in own if k in tensors]
    if not common:
        some = ', '.join(list(tensors)[:3]) or 'no tensors'
        raise ToolError(f'{what} {path} is of another model: it has none of this model\'s keys '
                        f'(it has {len(tensors)} tensors: {some}, ...)')
    if not whole_model:
        return
    mismatched = [f'{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in common if tensors[k].shape != own[k].shape]
    missing = [k for k in own if k in params and k not in tensors]
    if mismatched:
        raise ToolError(f'{what} {path} is of another model or variant: {len(mismatched)} tensors have other '
                        f'shapes ({"; ".join(mismatched[:3])}{"; ..." if len(mismatched) > 3 else ""})')
    if missing:
        raise ToolError(f'{what} {path} does not hold the whole model: {len(missing)} of its parameters are '
                        f'missing ({", ".join(missing[:3])}{", ..." if len(missing) > 3 else ""}); '
                        'for a backbone-only checkpoint use model.backbone.init_cfg instead')
