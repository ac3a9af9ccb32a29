"""Makes mmengine's distributed setup work on machines without CUDA.

mmengine defaults to NCCL and to ``DistributedDataParallel(device_ids=[LOCAL_RANK])``, both of which need GPUs.
Without CUDA we switch the config to the gloo backend and CPU-style DDP (``device_ids=None``) so that
``tools/dist_train.sh CONFIG N`` runs N CPU processes through the very same mmengine code path.
"""
import torch


def adapt_dist_cfg_for_device(cfg, launcher):
    """Edits ``cfg`` in place for the available device when ``launcher != 'none'``.

    Args:
        cfg (mmengine.Config): the full runner config.
        launcher (str): ``none | pytorch | slurm | mpi``.

    Returns:
        str | None: the distributed backend that will be used (``None`` when not distributed).
    """
    if launcher == 'none':
        return None
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if torch.cuda.is_available():
        dist_cfg.setdefault('backend', 'nccl')
        return dist_cfg['backend']
    dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    if cfg.get('find_unused_parameters', False):
        wrapper.setdefault('find_unused_parameters', True)
    cfg.model_wrapper_cfg = wrapper
    return 'gloo'


def init_cpu_process_group(launcher):
    """Initialises the gloo process group for ``--launcher pytorch`` on machines without CUDA.

    mmengine's ``init_dist('pytorch')`` unconditionally calls ``torch.cuda.set_device(LOCAL_RANK)``, which raises on
    CPU-only torch builds. We make the same ``init_process_group`` call mmengine would make (env:// rendezvous set up
    by torchrun), and mmengine's Runner then adopts the existing group (``Runner.setup_env`` only initialises
    when ``not is_distributed()``). With CUDA, or for other launchers, this does nothing and mmengine initialises.

    Returns:
        bool: whether a process group was initialised here.
    """
    import torch.distributed as dist
    if launcher != 'pytorch' or torch.cuda.is_available() or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend='gloo')
    return True


def destroy_process_group_if_initialized():
    """Tears the process group down before the interpreter exits, as torch asks (``destroy_process_group()`` "was
    not called before program exit" warning). Without it a gloo rank sometimes aborted at exit ("terminate called
    without an active exception", SIGABRT) after finishing its work, which failed the 2-process run."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
