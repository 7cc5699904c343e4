"""Compress and decompress images with a trained model: the user-facing codec.

``compress`` pads the image to a multiple of 64 pixels (edge replication, cropped again after decoding), infers
latents with the chosen method (``amortized``: the encoder networks; the iterative methods live in
:mod:`tfc_inference.inference`), range-codes them with TFC's coders and wraps the streams in the
:mod:`tfc_inference.container`.  ``decompress`` is its mirror image and needs only the file (the model is found
by the name stored in it, and checked against the stored weights fingerprint).

The decoder computes the entropy-model parameters of y from the decoded z with the very same TF function the
encoder used, so encoder and decoder agree bit for bit on every probability table (on the same software and
hardware; see the README on cross-platform decoding).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, Optional, Union

import numpy as np

from tfc_inference import container
from tfc_inference.data import ImageLike, to_rgb_array
from tfc_inference.errors import (BitstreamError, CorruptBitstreamError, ImageError, ModelError,
                                  ModelMismatchError, UnsupportedVersionError)
from tfc_inference.models import Z_STRIDE

BB_METHODS = ("sga+bb", "bb-no-sga", "bb-amortized")

ModelLike = Union[str, Any]


@dataclasses.dataclass
class CompressResult:
    """What ``compress`` produced, with its measured rate and distortion."""

    data: bytes
    method: str
    model_name: str
    height: int
    width: int
    #: 8-bit RGB reconstruction the decoder will produce.
    reconstruction: np.ndarray
    #: Bits from the entropy models' probabilities for the coded latents (-log2 P(z) - log2 P(y | z)).
    estimated_bits: float
    #: Bits of the range-coded streams alone (no container header).
    payload_bits: int
    mse: float
    psnr: float
    lmbda: float
    seconds: float
    iterations: int = 0
    y_symbols: Optional[np.ndarray] = None
    z_hat: Optional[np.ndarray] = None
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_pixels(self) -> int:
        return self.height * self.width

    @property
    def bits(self) -> int:
        """Actual file size in bits, container included."""
        return 8 * len(self.data)

    @property
    def bpp(self) -> float:
        return self.bits / self.num_pixels

    @property
    def estimated_bpp(self) -> float:
        return self.estimated_bits / self.num_pixels

    @property
    def rd_loss(self) -> float:
        """bpp (actual file) + lambda * MSE, the objective the model was trained for."""
        return self.bpp + self.lmbda * self.mse

    @property
    def coding_overhead(self) -> float:
        """Relative excess of the range-coded payload over the estimated rate."""
        return self.payload_bits / self.estimated_bits - 1.0

    @property
    def file_overhead(self) -> float:
        """Relative excess of the whole file (container included) over the estimated rate."""
        return self.bits / self.estimated_bits - 1.0


@dataclasses.dataclass
class DecompressResult:
    image: np.ndarray
    header: container.Header
    y_symbols: np.ndarray
    z_hat: np.ndarray
    seconds: float
    #: Bits-back files: the side information recovered from the file (None if it could not be recovered).
    side_info: Optional[bytes] = None
    #: Why the side information could not be recovered (the image is intact regardless).
    side_info_error: Optional[str] = None


def _get_model(model: ModelLike):
    from tfc_inference.zoo import load_model
    if isinstance(model, str):
        return load_model(model)
    if not hasattr(model, "entropy_encode"):
        raise ModelError(f"expected a model or a zoo name, got {type(model).__name__}")
    return model


def model_name(model) -> str:
    return getattr(model, "zoo_name", None) or "unnamed"


def pad_to_multiple(x: np.ndarray, multiple: int = Z_STRIDE) -> np.ndarray:
    """Edge-replicates the bottom/right border so both sides are multiples of ``multiple``."""
    h, w = x.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = np.pad(x, [(0, ph), (0, pw), (0, 0)], mode="edge")
    return x


def reconstruct(model, y_hat, height: int, width: int) -> np.ndarray:
    """The decoder's image: synthesis, clipped to 0..255, rounded to 8 bits, cropped to the original size."""
    import tensorflow as tf
    x_hat = model.synthesize(y_hat)
    x_hat = tf.cast(tf.round(tf.clip_by_value(x_hat, 0.0, 255.0)), tf.uint8)
    return x_hat[0, :height, :width].numpy()


def compress(model: ModelLike, image: ImageLike, method: str = "amortized", **method_options) -> CompressResult:
    """Compresses an image; returns the file bytes and measurements (see :class:`CompressResult`).

    Args:
      model: a model object or a zoo name / checkpoint path.
      image: path, encoded image bytes, PIL image or uint8 [H, W, 3] / [H, W] array.
      method: ``amortized``, an iterative method of :mod:`tfc_inference.inference` (e.g. ``sga``), or with a
        bits-back model one of ``sga+bb``, ``bb-no-sga``, ``bb-amortized`` (:mod:`tfc_inference.bits_back`).
      **method_options: passed to the inference method (e.g. ``iterations``, ``schedule``; for bits-back also
        ``side_info`` (bytes carried inside the file) and ``bbvi_iterations``).
    """
    import tensorflow as tf
    if method not in container.METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(container.METHODS)}")
    model = _get_model(model)
    x = to_rgb_array(image)
    height, width = x.shape[:2]
    if height * width > container.MAX_PIXELS:
        raise ImageError(f"image has {height * width} pixels; at most {container.MAX_PIXELS} are supported")
    t0 = time.perf_counter()
    x_padded = tf.convert_to_tensor(pad_to_multiple(x)[None], tf.float32)
    iterations, extra = 0, {}
    if method in BB_METHODS:
        return _compress_bits_back(model, x, x_padded, method, t0, **method_options)
    if "side_info" in method_options:
        raise TypeError(f"side information needs a bits-back method ({', '.join(BB_METHODS)}), not {method!r}")
    if method == "amortized":
        if method_options:
            raise TypeError(f"amortized inference takes no options, got {sorted(method_options)}")
        y, z = model.encode_latents(x_padded)
        y_hat, z_hat = model.discretize_amortized(y, z)
    else:
        from tfc_inference import inference
        out = inference.infer(model, x_padded, method, valid_shape=(height, width), **method_options)
        y_hat, z_hat, iterations, extra = out.y_hat, out.z_hat, out.iterations, out.info
    y_string, z_string, y_symbols = model.entropy_encode(y_hat, z_hat)
    streams = [z_string.numpy()[0], y_string.numpy()[0]]
    header = container.Header(method, model_name(model), model.fingerprint(), height, width)
    data = container.pack(header, streams)
    mu, index = model.coding_params(z_hat)
    estimated_bits = float(model.bits_y(y_hat, mu, index)[0] + model.bits_z(z_hat)[0])
    x_hat = reconstruct(model, y_hat, height, width)
    seconds = time.perf_counter() - t0
    mse = float(np.mean((x_hat.astype(np.float64) - x.astype(np.float64)) ** 2))
    psnr = float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))
    return CompressResult(data=data, method=method, model_name=header.model_name, height=height, width=width,
                          reconstruction=x_hat, estimated_bits=estimated_bits,
                          payload_bits=8 * sum(len(s) for s in streams), mse=mse, psnr=psnr,
                          lmbda=model.config.lmbda, seconds=seconds, iterations=iterations,
                          y_symbols=y_symbols.numpy(), z_hat=z_hat.numpy(), extra=extra)


def _compress_bits_back(model, x, x_padded, method, t0, side_info: Optional[bytes] = None,
                        **options) -> CompressResult:
    from tfc_inference import bits_back
    height, width = x.shape[:2]
    enc = bits_back.encode(model, x_padded, (height, width), method, side_info=side_info, **options)
    header = container.Header(method, model_name(model), model.fingerprint(), height, width)
    data = container.pack(header, enc.streams)
    x_hat = reconstruct(model, enc.y_hat, height, width)
    mse = float(np.mean((x_hat.astype(np.float64) - x.astype(np.float64)) ** 2))
    info = dict(enc.info)
    info["net_bits"] = 8 * len(data) - info["side_info_bits"]
    return CompressResult(data=data, method=method, model_name=header.model_name, height=height, width=width,
                          reconstruction=x_hat, estimated_bits=info["estimated_net_bits"],
                          payload_bits=8 * len(enc.streams[1]), mse=mse,
                          psnr=float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10))), lmbda=model.config.lmbda,
                          seconds=time.perf_counter() - t0, iterations=info["iterations"],
                          y_symbols=enc.y_hat.numpy().astype(np.int32), z_hat=enc.z_hat.numpy(), extra=info)


def read_header(data: bytes) -> container.Header:
    """Parses and verifies a file's container without decoding it."""
    header, _ = container.unpack(data)
    return header


def decompress_details(data: bytes, model: Optional[ModelLike] = None) -> DecompressResult:
    """Decodes a file; returns the image with the decoded latents (for verification) and the header."""
    import tensorflow as tf
    header, streams = container.unpack(data)
    t0 = time.perf_counter()
    if model is None:
        from tfc_inference.zoo import load_model
        model = load_model(header.model_name, allow_path=False)  # a file names a zoo model, never a path
    else:
        model = _get_model(model)
        if model_name(model) != header.model_name:
            raise ModelMismatchError(f"file was written by model {header.model_name!r}, not {model_name(model)!r}")
    if model.fingerprint() != header.fingerprint:
        raise ModelMismatchError(f"file was written by different weights of {header.model_name!r} "
                                 f"(fingerprint {header.fingerprint.hex()}, model has {model.fingerprint().hex()})")
    if header.method in BB_METHODS:
        from tfc_inference import bits_back
        if not hasattr(model, "q_params"):
            raise ModelMismatchError(f"{header.method} files need a bits-back model")
        y_shape = [-(-header.height // Z_STRIDE) * 4, -(-header.width // Z_STRIDE) * 4]
        dec = bits_back.decode(model, streams, y_shape)
        image = reconstruct(model, dec.y_hat, header.height, header.width)
        return DecompressResult(image=image, header=header, y_symbols=dec.y_hat.numpy().astype(np.int32),
                                z_hat=dec.z_hat.numpy(), seconds=time.perf_counter() - t0,
                                side_info=dec.side_info, side_info_error=dec.side_info_error)
    if len(streams) != 2:
        raise CorruptBitstreamError(f"expected 2 streams, found {len(streams)}")
    z_shape = [-(-header.height // Z_STRIDE), -(-header.width // Z_STRIDE)]
    try:
        y_hat, z_hat, y_symbols = model.entropy_decode(tf.constant([streams[1]]), tf.constant([streams[0]]),
                                                       z_shape)
    except tf.errors.OpError as e:
        raise CorruptBitstreamError(f"range decoder failed: {e.message.splitlines()[0]}") from None
    image = reconstruct(model, y_hat, header.height, header.width)
    return DecompressResult(image=image, header=header, y_symbols=y_symbols.numpy(), z_hat=z_hat.numpy(),
                            seconds=time.perf_counter() - t0)


def decompress(data: bytes, model: Optional[ModelLike] = None) -> np.ndarray:
    """Decodes a file written by :func:`compress` to a uint8 [H, W, 3] RGB image.

    Raises:
      BitstreamError: the bytes are not a valid file (its subclasses say why: truncated, corrupt, version).
      ModelNotFoundError / ModelMismatchError: the model the file needs is missing or differs.
    """
    return decompress_details(data, model).image


__all__ = ["compress", "decompress", "decompress_details", "read_header", "CompressResult", "DecompressResult",
           "BitstreamError"]
