"""Inputs of ``tools/demo.py``: image files, folders of images and videos (frames sampled at a given rate).

Images are read with mmcv (``mmcv.imread``, BGR uint8), videos with ``mmcv.VideoReader``. Every failure raises
:class:`InputError` naming the file and what is wrong.
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import numpy as np

__all__ = ['IMAGE_EXTENSIONS', 'VIDEO_EXTENSIONS', 'InputError', 'InputItem', 'collect_inputs', 'read_input']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v')


class InputError(ValueError):
    """A missing, unreadable or unsupported input (the message names the file)."""


@dataclass(frozen=True)
class InputItem:
    """One image to run on: ``path`` of an image file, or of a video with ``frame`` (0-based index).

    ``name`` is the output stem (image base name without extension, ``<video>_f<frame>`` for video frames) and
    ``calib_name`` the name looked up in the calibration (image base name; the video's base name for its frames).
    """
    path: str
    name: str
    frame: Optional[int] = None

    @property
    def calib_name(self) -> str:
        return osp.basename(self.path)


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _video_frames(path: str, fps: Optional[float]) -> List[InputItem]:
    import mmcv
    try:
        video = mmcv.VideoReader(path)
    except Exception as exc:  # cv2 gives no typed error
        raise InputError(f'{path}: cannot open video ({exc})') from None
    n, rate = len(video), float(video.fps or 0)
    if n == 0:
        raise InputError(f'{path}: video has no frames (or its codec is not supported by OpenCV)')
    step = 1 if not fps or rate <= 0 else max(1, int(round(rate / fps)))
    stem = osp.splitext(osp.basename(path))[0]
    return [InputItem(path, f'{stem}_f{i:06d}', i) for i in range(0, n, step)]


def collect_inputs(inputs: Sequence[str], video_fps: Optional[float] = 2.0) -> List[InputItem]:
    """Expands image files, folders (their image files, sorted, not recursive) and videos (one item every
    ``round(video_fps_native / video_fps)`` frames; ``None``/0: every frame) into a flat list.

    Raises :class:`InputError` for a path that does not exist, an unsupported extension, an empty folder, or two
    inputs with the same output name.
    """
    items: List[InputItem] = []
    for path in inputs:
        if osp.isdir(path):
            files = sorted(f for f in os.listdir(path) if _is_image(f) and osp.isfile(osp.join(path, f)))
            if not files:
                raise InputError(f'{path}: folder has no image files ({", ".join(IMAGE_EXTENSIONS)})')
            items += [InputItem(osp.join(path, f), osp.splitext(f)[0]) for f in files]
        elif not osp.exists(path):
            raise InputError(f'{path}: no such file or folder')
        elif _is_image(path):
            items.append(InputItem(path, osp.splitext(osp.basename(path))[0]))
        elif _is_video(path):
            items += _video_frames(path, video_fps)
        else:
            raise InputError(f'{path}: not an image ({", ".join(IMAGE_EXTENSIONS)}) or video '
                             f'({", ".join(VIDEO_EXTENSIONS)})')
    seen = {}
    for it in items:
        if it.name in seen:
            raise InputError(f'{it.path} and {seen[it.name]} would write the same outputs ({it.name}.*); '
                             'rename one or run them separately')
        seen[it.name] = it.path
    return items


def read_input(item: InputItem) -> np.ndarray:
    """The (H, W, 3) uint8 BGR image of ``item`` (grey images are converted, alpha dropped)."""
    import mmcv
    if item.frame is None:
        try:
            img = mmcv.imread(item.path, flag='color')
        except Exception as exc:
            raise InputError(f'{item.path}: cannot read image ({exc})') from None
        if img is None:
            raise InputError(f'{item.path}: cannot read image (empty, truncated or not an image)')
        return img
    video = mmcv.VideoReader(item.path)
    img = video.get_frame(item.frame)
    if img is None:
        raise InputError(f'{item.path}: cannot decode frame {item.frame}')
    return img


def iter_batches(items: Sequence[InputItem], batch_size: int) -> Iterator[List[InputItem]]:
    """Consecutive chunks of ``batch_size`` items."""
    if batch_size < 1:
        raise ValueError(f'batch size must be >= 1, got {batch_size}')
    for i in range(0, len(items), batch_size):
        yield list(items[i:i + batch_size])
