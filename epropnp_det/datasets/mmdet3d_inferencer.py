"""Lets mmdet3d's ``MonoDet3DInferencer(model=CONFIG, weights=CKPT)`` run the project's configs unchanged.

mmdet3d's inferencer finds the image loader of the test pipeline by the exact type name
``'LoadImageFromFileMono3D'`` and swaps in its own loader (which builds that class from the same arguments). The
project's loader ``EProPnPLoadImage`` is a subclass of it whose additions (file checks, geometry keys) have test-time
defaults in the project's transforms and head, so the inferencer may treat it as its own. This module wraps the
inferencer's pipeline initialisation once, when the plugin's datasets are imported (as every project config does;
mmdet3d's inference API costs milliseconds more then), to rename the loader in the inferencer's own copy of the
config; the project's config files and mmdet3d's behaviour for other configs are unchanged.
"""
__all__ = ['PROJECT_LOADERS', 'as_mmdet3d_loader', 'patch_mono_det3d_inferencer']

#: test-pipeline loaders of the project that mmdet3d's inferencer may replace by its own
PROJECT_LOADERS = ('EProPnPLoadImage',)


def as_mmdet3d_loader(pipeline) -> int:
    """Renames the project's image loader of a pipeline config (list of dicts, in place) to
    ``'LoadImageFromFileMono3D'``; returns how many were renamed."""
    n = 0
    for t in pipeline:
        if isinstance(t, dict) and t.get('type') in PROJECT_LOADERS:
            t['type'] = 'LoadImageFromFileMono3D'
            n += 1
    return n


def patch_mono_det3d_inferencer() -> None:
    """Wraps ``MonoDet3DInferencer._init_pipeline`` (idempotent) so that it accepts ``EProPnPLoadImage``."""
    from mmdet3d.apis.inferencers.mono_det3d_inferencer import MonoDet3DInferencer
    original = MonoDet3DInferencer._init_pipeline
    if getattr(original, '_epropnp_loader', False):
        return

    def _init_pipeline(self, cfg):
        as_mmdet3d_loader(cfg.test_dataloader.dataset.pipeline)
        return original(self, cfg)

    _init_pipeline._epropnp_loader = True
    _init_pipeline.__doc__ = original.__doc__
    MonoDet3DInferencer._init_pipeline = _init_pipeline

