"""2D–3D correspondences of a batch of objects, the input of the pose stage.

Each object ``i`` has ``n`` points: object-frame coordinates ``x3d = noc · dims`` (metres; ``noc`` the normalised
object coordinates in the KITTI-local axes of :mod:`epropnp_det.structures.boxes`), their image coordinates ``x2d``
(ORIGINAL image, K-projection pixels of the model's convention, :mod:`epropnp_det.ops.pixels`) and weights
``w2d = w2d_unit · scale`` (per point and axis, 1/pixels). The factors are kept because the training policies detach
them separately (the derivative regularisation of v1 sees ``dims`` and ``scale`` detached).
"""
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import Tensor

__all__ = ['Correspondences']


@dataclass(frozen=True)
class Correspondences:
    """Attributes:
        noc: (N, n, 3) normalised object coordinates.
        dims: (N, 3) ``[l, h, w]`` metres.
        x2d: (N, n, 2) original-image K-projection pixels.
        w2d_unit: (N, n, 2) weights before the per-object scale.
        scale: (N, 2) per-object weight scale.
        img_inds: (N,) long, the image of each object in its batch.
    """
    noc: Tensor
    dims: Tensor
    x2d: Tensor
    w2d_unit: Tensor
    scale: Tensor
    img_inds: Tensor

    def __post_init__(self):
        N, n = self.noc.shape[:2]
        for name, shape in (('noc', (N, n, 3)), ('dims', (N, 3)), ('x2d', (N, n, 2)), ('w2d_unit', (N, n, 2)),
                            ('scale', (N, 2)), ('img_inds', (N,))):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f'Correspondences.{name} must be {shape}, got {tuple(getattr(self, name).shape)}')

    @property
    def x3d(self) -> Tensor:
        """(N, n, 3) object-frame coordinates, metres."""
        return self.noc * self.dims[:, None]

    @property
    def w2d(self) -> Tensor:
        """(N, n, 2) the weights the PnP cost uses."""
        return self.w2d_unit * self.scale[:, None]

    @property
    def num_objects(self) -> int:
        return self.noc.shape[0]

    def detach(self, x2d: bool = False, dims: bool = False, scale: bool = False) -> 'Correspondences':
        """A copy with the chosen factors detached (the pose stage's detach policies)."""
        return replace(self, x2d=self.x2d.detach() if x2d else self.x2d,
                       dims=self.dims.detach() if dims else self.dims,
                       scale=self.scale.detach() if scale else self.scale)

    def index(self, idx) -> 'Correspondences':
        """Select objects (bool mask, long indices or slice on the object axis)."""
        return Correspondences(self.noc[idx], self.dims[idx], self.x2d[idx], self.w2d_unit[idx], self.scale[idx],
                               self.img_inds[idx])

    @staticmethod
    def cat(a: 'Correspondences', b: 'Correspondences', dims: Optional[Tensor] = None) -> 'Correspondences':
        """The ``n_a + n_b`` points of the same objects seen twice (flip test-time augmentation): ``noc`` and
        ``x2d`` concatenated along the point axis (both in original-image coordinates, so compatible), each
        branch's weights with its own scale applied (the result has ``scale`` 1), and the merged ``dims``
        (default: the geometric mean of both)."""
        if a.num_objects != b.num_objects:
            raise ValueError(f'Correspondences.cat: {a.num_objects} vs {b.num_objects} objects')
        if dims is None:
            dims = ((a.dims.log() + b.dims.log()) / 2).exp()
        return Correspondences(torch.cat((a.noc, b.noc), 1), dims, torch.cat((a.x2d, b.x2d), 1),
                               torch.cat((a.w2d, b.w2d), 1), torch.ones_like(a.scale), a.img_inds)
