"""Config loading and Runner launch shared by ``tools/train.py`` and ``tools/test.py``."""
import os.path as osp

from mmengine.config import Config

from .dist_env import init_cpu_process_group


def load_runner_cfg(config, launcher='none', cfg_options=None, work_dir=None):
    """Loads ``config`` (running its ``custom_imports``), merges ``--cfg-options`` and sets the work dir
    (``./work_dirs/<config name>`` unless given here or in the config)."""
    trust_local_checkpoints()
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def build_runner(cfg):
    """Initialises a CPU process group where mmengine cannot (see :func:`init_cpu_process_group`) and builds the
    Runner (``runner_type`` honoured). Call :func:`adapt_dist_cfg_for_device` on ``cfg`` first."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    init_cpu_process_group(cfg.launcher)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def trust_local_checkpoints():
    """Lets mmengine 0.10 load its own checkpoints under torch >= 2.6.

    torch 2.6 made ``torch.load(weights_only=True)`` the default; mmengine 0.10.7 calls ``torch.load`` without the
    argument, and its checkpoints carry the message hub (``HistoryBuffer``, numpy arrays), so ``--resume``,
    ``tools/test.py CKPT`` and ``load_from`` fail with "Weights only load failed". Setting torch's documented opt-out
    (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) restores the pre-2.6 behaviour for calls that don't choose; only load
    checkpoints you trust (as with any pickle). A value the user set explicitly is kept.
    """
    import os
    os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
