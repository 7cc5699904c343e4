"""Reading images for coding, and the training-data pipeline.

Images for coding are converted to 8-bit RGB ``uint8`` arrays of shape [H, W, 3]: grayscale (``L``), palette
(``P``) and ``RGB``-like modes convert losslessly; alpha channels are accepted only when fully opaque, and
16-bit images are reduced to 8 bits (their high bytes) with an ``ImageConversionWarning``; float images are
refused.  An EXIF
orientation tag is applied (the array is the image as viewers show it).  Images above
:data:`tfc_inference.container.MAX_PIXELS` pixels are refused from their header, before any pixel is decoded.

Training batches are a deterministic function of (seed, step): a killed run resumed at step s sees exactly the
batches it would have seen, which is what makes ``--resume`` exact.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Iterable, List, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tfc_inference.container import MAX_PIXELS
from tfc_inference.errors import (ImageConversionWarning, ImageError, ImageTooLargeError, TrainingError,
                                  UnsupportedImageModeError)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
MAX_IMAGE_SIDE = 1 << 15  # 32768: the container stores sizes as 16-bit-plus fields; larger would not fit RAM anyway

ImageLike = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]


def _has_16bit_samples(img: Image.Image) -> bool:
    """Whether the file stores 16-bit samples (its decoder's raw mode, e.g. ``RGB;16B``)."""
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _warn_16bit(what: str) -> None:
    warnings.warn(f"{what}: 16-bit samples converted to 8 bits (high byte)", ImageConversionWarning, stacklevel=4)


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(f"{what}: {width}x{height} = {width * height} pixels exceeds the limit of "
                                 f"{MAX_PIXELS} pixels (e.g. 4096x4096); downscale or split it")


def _oriented(img: Image.Image) -> Image.Image:
    """Applies the EXIF orientation tag, if any (a no-op for images without one)."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001  (a malformed EXIF block must not make the image unreadable)
        return img
    if orientation in (None, 1):
        return img
    return ImageOps.exif_transpose(img)


def _from_pil(img: Image.Image, what: str) -> np.ndarray:
    _check_size(*img.size, what)
    img = _oriented(img)
    mode = img.mode
    if mode == "F":
        raise UnsupportedImageModeError(f"{what}: float images are not supported; convert to 8-bit RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        samples = np.asarray(img).astype(np.int64)
        if samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise UnsupportedImageModeError(f"{what}: 32-bit integer images are not supported; convert to 8-bit")
        _warn_16bit(what)
        gray = (samples >> 8).astype(np.uint8)  # the high byte, as Pillow does for 16-bit colour files
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        if (rgba[..., 3] != 255).any():
            raise UnsupportedImageModeError(
                f"{what}: image has transparency (mode {mode}); flatten it onto a background first")
        return np.ascontiguousarray(rgba[..., :3])
    if mode not in ("RGB", "L", "P", "1", "CMYK", "YCbCr"):
        raise UnsupportedImageModeError(f"{what}: unsupported image mode {mode}")
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def to_rgb_array(image: ImageLike, what: str = "image") -> np.ndarray:
    """Returns ``image`` (path, encoded bytes, PIL image or array) as a uint8 [H, W, 3] RGB array.

    Raises:
      ImageError: unreadable or empty input, or an array of the wrong dtype/shape.
      UnsupportedImageModeError: transparency or float data.

    Warns:
      ImageConversionWarning: 16-bit samples were reduced to 8 bits.
    """
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            raise ImageError(f"{what}: expected a uint8 array, got {arr.dtype}")
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        elif arr.ndim == 3 and arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        elif arr.ndim == 3 and arr.shape[-1] == 4:
            if (arr[..., 3] != 255).any():
                raise UnsupportedImageModeError(f"{what}: RGBA array has transparency")
            arr = arr[..., :3]
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ImageError(f"{what}: expected shape [H, W, 3], got {list(image.shape)}")
        arr = np.ascontiguousarray(arr)
    else:
        if isinstance(image, Image.Image):
            img = image
        else:
            try:
                src = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else os.fspath(image)
                img = Image.open(src)
                _check_size(*img.size, what)  # from the header: nothing decoded yet
                # Pillow reads 16-bit colour PNGs as 8-bit modes (raw mode "RGB;16B", the high bytes): say so.
                if _has_16bit_samples(img):
                    _warn_16bit(what)
                img.load()
            except FileNotFoundError:
                raise ImageError(f"{what}: file not found") from None
            except UnsupportedImageModeError:
                raise
            except Image.DecompressionBombError:
                raise ImageTooLargeError(f"{what}: image is too large (more than {MAX_PIXELS} pixels)") from None
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
                raise ImageError(f"{what}: not a readable image ({e})") from None
        arr = _from_pil(img, what)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{what}: empty image of shape {list(arr.shape)}")
    _check_size(arr.shape[1], arr.shape[0], what)
    if max(arr.shape[:2]) > MAX_IMAGE_SIDE:
        raise ImageError(f"{what}: {arr.shape[1]}x{arr.shape[0]} exceeds the maximum side {MAX_IMAGE_SIDE}")
    return arr


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    return to_rgb_array(path, what=os.fspath(path))


def write_png(path: Union[str, os.PathLike], image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="PNG")


def list_images(folders: Iterable[Union[str, os.PathLike]]) -> List[str]:
    """All image files below the given folders (recursively), sorted for reproducibility."""
    paths = []
    for folder in folders:
        folder = os.fspath(folder)
        if os.path.isfile(folder):
            paths.append(folder)
            continue
        if not os.path.isdir(folder):
            raise TrainingError(f"training data folder not found: {folder}")
        for root, _, files in os.walk(folder):
            paths += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(paths)


class CropSampler:
    """Random crops from images decoded once and kept in memory; batch ``step`` depends only on (seed, step)."""

    def __init__(self, paths: Sequence[str], crop: int, batch_size: int, seed: int = 0, progress: bool = False):
        if not paths:
            raise TrainingError("no training images found")
        images = []
        iterator = paths
        if progress:
            from tqdm import tqdm
            iterator = tqdm(paths, desc="decoding training images", unit="img", leave=False)
        for p in iterator:
            try:
                img = read_image(p)
            except ImageError:
                continue
            if min(img.shape[:2]) >= crop:
                images.append(img)
        if not images:
            raise TrainingError(f"none of the {len(paths)} training images is at least {crop}x{crop}")
        self.images = images
        self.crop = crop
        self.batch_size = batch_size
        self.seed = seed

    def batch(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(step)])
        out = np.empty([self.batch_size, self.crop, self.crop, 3], np.uint8)
        for b in range(self.batch_size):
            img = self.images[rng.integers(len(self.images))]
            top = rng.integers(img.shape[0] - self.crop + 1)
            left = rng.integers(img.shape[1] - self.crop + 1)
            patch = img[top:top + self.crop, left:left + self.crop]
            out[b] = patch[:, ::-1] if rng.random() < 0.5 else patch
        return out

    def dataset(self, start_step: int, end_step: int):
        """A ``tf.data`` pipeline of the batches for steps [start_step, end_step), prefetched."""
        import tensorflow as tf
        ds = tf.data.Dataset.range(start_step, end_step)
        ds = ds.map(lambda s: tf.numpy_function(self.batch, [s], tf.uint8, stateful=False),
                    num_parallel_calls=1, deterministic=True)
        shape = [self.batch_size, self.crop, self.crop, 3]
        ds = ds.map(lambda b: tf.ensure_shape(b, shape))
        return ds.prefetch(2)
