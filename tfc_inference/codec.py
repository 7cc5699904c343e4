"""Compress and decompress images with a trained model: the user-facing codec.

``compress`` pads the image to a multiple of 64 pixels (edge replication, cropped again after decoding), infers
latents with the chosen method (``amortized``: the encoder networks; the iterative methods live in
:mod:`tfc_inference.inference`), range-codes them with TFC's coders and wraps the streams in the
:mod:`tfc_inference.container`.  ``decompress`` is its mirror image and needs only the file (the model is found
by the name stored in it, and checked against the stored weights fingerprint).

The decoder computes the entropy-model parameters of y from the decoded z with the very same TF function the
encoder used, so encoder and decoder agree bit for bit on every probability table on the same software and
hardware.

**Other numerics** (container version 2).  The scale index that selects each y element's probability table is
``floor(f)`` of a float ``f`` computed by the hyper-synthesis; another CPU, a GPU or other oneDNN kernels change
``f`` by ~1e-5, and where ``f`` lies that close to an integer the decoder would pick another table and the range
decoder would return garbage.  Two measures:

* *pinning*: the encoder lists every index whose ``f`` lies within :data:`PIN_MARGIN` of an interior rounding
  boundary, with the side it chose (about 2 bytes each); the decoder uses those values instead of its own
  ``floor``.  So a decoder whose ``f`` differs by less than the margin selects exactly the encoder's tables.
* *guard*: a CRC-32 over the coding tables and every (pinned) scale index, checked before the y stream is
  decoded, raises :class:`~tfc_inference.errors.EntropyModelMismatchError` instead of decoding garbage; a CRC-32
  of the encoder's reconstruction tells whether the decoded image is bit-identical (if not, only the synthesis
  numerics differed: :class:`~tfc_inference.errors.InexactDecodeWarning`).  Bits-back files carry a CRC of
  the latents and of the image instead (:data:`BITS_BACK_GUARD`; their y coder uses continuous scales, which
  cannot be pinned): their y decoding is sensitive to the last bit of the scales, and even the intra-op thread
  count changes it (tests/test_reliability.py), so a decoder on other numerics raises
  :class:`~tfc_inference.errors.EntropyModelMismatchError` instead of returning garbage.  The side information
  is guarded separately (by the q checksum of :mod:`tfc_inference.bits_back`).

Guard stream layout (hyperprior methods): CRC-32 of (z CDF table, z CDF offsets, y CDF table, y CDF offsets,
scale indexes as bytes), CRC-32 of the latents (4 z_hat and y symbols as int32: catches a payload altered before
the container CRC was computed), CRC-32 of the reconstruction (uint8, row-major), varint P = number of pinned indexes,
P varints (gap to the previous pinned flat position, minus one), ceil(P / 8) bytes of one bit each (1: the index
is ``round(f)``, 0: ``round(f) - 1``).  Bits-back methods: CRC-32 of the latents (4 z_hat and y_hat as int32),
CRC-32 of the reconstruction.
"""
from __future__ import annotations

import dataclasses
import struct
import time
import warnings
import zlib
from typing import Any, Dict, Optional, Union

import numpy as np

from tfc_inference import container
from tfc_inference.data import ImageLike, to_rgb_array
from tfc_inference.errors import (BitstreamError, CorruptBitstreamError, DecodeTimeoutError,
                                  EntropyModelMismatchError, ImageTooLargeError, InexactDecodeWarning, ModelError, ModelMismatchError)
from tfc_inference.models import Z_STRIDE

BB_METHODS = ("sga+bb", "bb-no-sga", "bb-amortized")
#: Scale indexes whose float value lies closer than this to an interior integer are pinned (container v2).
#: Measured encoder/decoder differences with oneDNN on vs off are ~2e-5 (examples/results/reliability).
PIN_MARGIN = 1e-4
#: Whether version 2 bits-back files get a guard stream (a third stream, 8 bytes: CRC of the latents and of the
#: image; 9 bytes with its length field).  On since the determinism tests found bits-back files encoded with one
#: intra-op thread count decoding to garbage, silently, with another.  The decoder reads bits-back files with
#: or without the guard (``[meta, ans words]`` or ``[meta, ans words, guard]``).
BITS_BACK_GUARD = True

#: Time limit of one range-decoder call: this many seconds plus ``DECODE_SECONDS_PER_SYMBOL`` per coded symbol
#: (a real decode takes ~0.1 us per symbol here; the limit only ends TFC's endless loop on crafted streams).
DECODE_TIMEOUT = 30.0
DECODE_SECONDS_PER_SYMBOL = 1e-5

ModelLike = Union[str, Any]


def _bounded(fn, what: str, symbols: int, timeout: Optional[float]):
    """Runs the range-decoder call ``fn()`` in a thread and gives up after the time limit.

    TensorFlow ops release the GIL, so the caller regains control; a decoder stuck in TFC's escape-code loop
    cannot be stopped and keeps spinning in its daemon thread (see :class:`DecodeTimeoutError`)."""
    import threading
    import tensorflow as tf
    if timeout is not None and timeout <= 0:
        return fn()
    limit = (DECODE_TIMEOUT if timeout is None else timeout) + DECODE_SECONDS_PER_SYMBOL * symbols
    box: Dict[str, Any] = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001  (re-raised in the caller's thread)
            box["error"] = e

    worker = threading.Thread(target=run, name=f"tfc-inference-decode-{what}", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        raise DecodeTimeoutError(f"range decoder did not finish decoding {what} within {limit:.0f} s: the stream "
                                 "is malformed (its thread keeps running until the process exits)")
    if "error" in box:
        e = box["error"]
        if isinstance(e, tf.errors.OpError):
            raise CorruptBitstreamError(f"range decoder failed on {what}: {e.message.splitlines()[0]}") from None
        raise e
    return box["value"]


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
    #: Version 2 files: whether the image is bit-identical to the encoder's reconstruction (None: version 1).
    exact: Optional[bool] = None


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


# ------------------------------------------------------------------------------------------------------------------
# the guard of container version 2
def _crc(*arrays) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    return crc


def _table_crc(model) -> int:
    """CRC-32 of the range coders' quantized CDF tables (cached per prepared coder)."""
    model._require_coders()
    key = (id(model._z_coder), id(model._y_coder))
    cached = getattr(model, "_tfci_table_crc", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    crc = _crc(*(np.asarray(t).astype("<i4") for t in (model._z_coder.cdf, model._z_coder.cdf_offset,
                                                       model._y_coder.cdf, model._y_coder.cdf_offset)))
    model._tfci_table_crc = (key, crc)
    return crc


def _y_params_fn(model):
    """(mu, continuous scale index) of p(y | z_hat), one compiled function per model."""
    import tensorflow as tf
    fn = getattr(model, "_tfci_y_params", None)
    if fn is None:
        fn = tf.function(model.y_prior_params, reduce_retracing=True)
        model._tfci_y_params = fn
    return fn


def _pins(f: np.ndarray, margin: float):
    """Flat positions whose index ``f`` lies within ``margin`` of an interior integer, and the chosen side."""
    flat = f.ravel()
    k = np.rint(flat)
    near = np.flatnonzero((np.abs(flat - k) < margin) & (k >= 1))
    return near, (flat[near] >= k[near])


def _pack_guard(crcs, positions=None, sides=None) -> bytes:
    out = struct.pack(f">{len(crcs)}I", *crcs)
    if positions is None:
        return out
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    bits = np.packbits(np.asarray(sides, bool)).tobytes() if len(sides) else b""
    return out + container.encode_varint(len(positions)) + b"".join(container.encode_varint(int(g)) for g in gaps) + bits


def _parse_guard(guard: bytes, num_indexes: Optional[int]):
    """(CRCs, pinned positions, sides); ``num_indexes`` None for the bits-back guard (two CRCs, no pins)."""
    n = 8 if num_indexes is None else 12
    if len(guard) < n:
        raise CorruptBitstreamError("guard stream is too short")
    crcs = struct.unpack(f">{n // 4}I", guard[:n])
    if num_indexes is None:
        if len(guard) != n:
            raise CorruptBitstreamError("guard stream has the wrong length")
        return crcs, None, None
    r = container._Reader(guard)
    r.pos = n
    count = r.varint("guard stream")
    if count > num_indexes:
        raise CorruptBitstreamError(f"guard stream pins {count} indexes of {num_indexes}")
    positions = np.empty(count, np.int64)
    pos = -1
    for i in range(count):
        pos += r.varint("guard stream") + 1
        if pos >= num_indexes:
            raise CorruptBitstreamError("guard stream pins an index outside the latents")
        positions[i] = pos
    bits = r.take(-(-count // 8), "guard stream")
    if r.pos != len(guard):
        raise CorruptBitstreamError("guard stream has unexpected trailing bytes")
    sides = np.unpackbits(np.frombuffer(bits, np.uint8))[:count].astype(bool)
    return crcs, positions, sides


def _mismatch(what: str) -> EntropyModelMismatchError:
    return EntropyModelMismatchError(
        f"the file is intact, but this decoder's entropy model differs from the encoder's ({what}): its floating "
        f"point numerics differ (another CPU or GPU, TensorFlow build, or TF_ENABLE_ONEDNN_OPTS setting); "
        f"decoding here would give garbage, so decode on the encoder's platform")


def _encode_v2(model, y_hat, z_hat, pin_margin: float):
    """Range-codes like ``model.entropy_encode`` and returns the pins and the model CRC of the guard."""
    import tensorflow as tf
    model._require_coders()
    z_string = model._z_coder.compress(z_hat)
    mu, f = _y_params_fn(model)(z_hat)
    f = f.numpy()
    index = np.floor(f)
    positions, sides = _pins(f, pin_margin)
    symbols = tf.round(y_hat - mu)
    y_string = model._y_coder.compress(symbols, tf.constant(index))
    model_crc = _crc(np.uint32(_table_crc(model)), index.astype(np.uint8))
    return z_string.numpy()[0], y_string.numpy()[0], tf.cast(symbols, tf.int32), model_crc, positions, sides


def _decode_v2(model, streams, z_shape, num_scales: int, timeout: Optional[float] = None):
    import tensorflow as tf
    z_string, y_string, guard = streams
    model._require_coders()
    z_count = int(np.prod(z_shape.numpy())) * model.config.hyper_latent_channels
    z_hat = _bounded(lambda: model._z_coder.decompress(tf.constant([z_string]), z_shape), "z", z_count, timeout)
    mu, f = _y_params_fn(model)(z_hat)
    f = f.numpy()
    (model_crc, latent_crc, image_crc), positions, sides = _parse_guard(guard, f.size)
    index = np.floor(f).ravel()
    if len(positions):
        k = np.rint(f.ravel()[positions])
        index[positions] = np.clip(np.where(sides, k, k - 1), 0, num_scales - 1)
    index = index.reshape(f.shape)
    if _crc(np.uint32(_table_crc(model)), index.astype(np.uint8)) != model_crc:
        raise _mismatch(f"checksum over the coding tables and the {f.size} scale indexes differs")
    symbols = _bounded(lambda: model._y_coder.decompress(tf.constant([y_string]), tf.constant(index)), "y",
                       index.size, timeout)
    symbols = tf.cast(symbols, tf.int32)
    if _latent_crc(z_hat.numpy(), symbols.numpy()) != latent_crc:
        raise CorruptBitstreamError("decoded latents differ from the encoder's although the entropy models match: "
                                    "the payload was altered before the file's checksum was written")
    return tf.cast(symbols, tf.float32) + mu, z_hat, symbols, image_crc


def _latent_crc(z_hat, y_ints) -> int:
    """CRC-32 of the coded latents: z_hat (on its grid, as int32 multiples of 1/4) and the integer y (int32)."""
    return _crc(np.rint(4 * np.asarray(z_hat, np.float64)).astype("<i4"), np.asarray(y_ints).astype("<i4"))


def _check_exact(image: np.ndarray, image_crc: int) -> bool:
    exact = _crc(image) == image_crc
    if not exact:
        warnings.warn("decoded image is not bit-identical to the encoder's reconstruction: the latents were "
                      "decoded exactly, but the synthesis transform ran on different floating point numerics",
                      InexactDecodeWarning, stacklevel=3)
    return exact


# ------------------------------------------------------------------------------------------------------------------
def compress(model: ModelLike, image: ImageLike, method: str = "amortized", *,
             container_version: int = container.VERSION, pin_margin: float = PIN_MARGIN,
             **method_options) -> CompressResult:
    """Compresses an image; returns the file bytes and measurements (see :class:`CompressResult`).

    Args:
      model: a model object or a zoo name / checkpoint path.
      image: path, encoded image bytes, PIL image or uint8 [H, W, 3] / [H, W] array.
      method: ``amortized``, an iterative method of :mod:`tfc_inference.inference` (e.g. ``sga``), or with a
        bits-back model one of ``sga+bb``, ``bb-no-sga``, ``bb-amortized`` (:mod:`tfc_inference.bits_back`).
      container_version: 2 (default: with the guard stream) or 1 (the original format, no guard).
      pin_margin: version 2: pin scale indexes this close to a rounding boundary (0 pins none).
      **method_options: passed to the inference method (e.g. ``iterations``, ``schedule``; for bits-back also
        ``side_info`` (bytes carried inside the file) and ``bbvi_iterations``); ``preset`` (``paper``, ``best``,
        ``fast``: :mod:`tfc_inference.presets`) fills in the SGA settings the call does not give.

    Raises:
      ImageError: unreadable image; ImageTooLargeError above :data:`container.MAX_PIXELS` pixels;
      UnsupportedImageModeError: transparency, 16-bit or float images.
    """
    import tensorflow as tf
    if method not in container.METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(container.METHODS)}")
    if container_version not in container.READABLE_VERSIONS:
        raise ValueError(f"container_version must be one of {container.READABLE_VERSIONS}")
    if "preset" in method_options:
        from tfc_inference import presets
        if method not in presets.METHODS:
            raise TypeError(f"presets set the options of {' and '.join(presets.METHODS)}, not of {method!r}")
        method_options = presets.resolve(method_options)
    model = _get_model(model)
    x = to_rgb_array(image)
    height, width = x.shape[:2]
    if height * width > container.MAX_PIXELS:
        raise ImageTooLargeError(f"image is {width}x{height} = {height * width} pixels; at most "
                                 f"{container.MAX_PIXELS} pixels (e.g. 4096x4096) are supported: downscale or "
                                 f"split it")
    t0 = time.perf_counter()
    x_padded = tf.convert_to_tensor(pad_to_multiple(x)[None], tf.float32)
    iterations, extra = 0, {}
    if method in BB_METHODS:
        return _compress_bits_back(model, x, x_padded, method, t0, container_version, **method_options)
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
    header = container.Header(method, model_name(model), model.fingerprint(), height, width, container_version)
    x_hat = reconstruct(model, y_hat, height, width)
    if container_version == 1:
        y_string, z_string, y_symbols = model.entropy_encode(y_hat, z_hat)
        streams = [z_string.numpy()[0], y_string.numpy()[0]]
    else:
        z_bytes, y_bytes, y_symbols, model_crc, positions, sides = _encode_v2(model, y_hat, z_hat, pin_margin)
        guard = _pack_guard([model_crc, _latent_crc(z_hat.numpy(), y_symbols.numpy()), _crc(x_hat)],
                            positions, sides)
        streams = [z_bytes, y_bytes, guard]
        extra = dict(extra, pinned_indexes=len(positions), guard_bytes=len(guard))
    data = container.pack(header, streams)
    mu, index = model.coding_params(z_hat)
    estimated_bits = float(model.bits_y(y_hat, mu, index)[0] + model.bits_z(z_hat)[0])
    seconds = time.perf_counter() - t0
    mse = float(np.mean((x_hat.astype(np.float64) - x.astype(np.float64)) ** 2))
    psnr = float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))
    return CompressResult(data=data, method=method, model_name=header.model_name, height=height, width=width,
                          reconstruction=x_hat, estimated_bits=estimated_bits,
                          payload_bits=8 * (len(streams[0]) + len(streams[1])), mse=mse, psnr=psnr,
                          lmbda=model.config.lmbda, seconds=seconds, iterations=iterations,
                          y_symbols=y_symbols.numpy(), z_hat=z_hat.numpy(), extra=extra)


def _compress_bits_back(model, x, x_padded, method, t0, container_version: int, side_info: Optional[bytes] = None,
                        **options) -> CompressResult:
    from tfc_inference import bits_back
    height, width = x.shape[:2]
    enc = bits_back.encode(model, x_padded, (height, width), method, side_info=side_info, **options)
    header = container.Header(method, model_name(model), model.fingerprint(), height, width, container_version)
    x_hat = reconstruct(model, enc.y_hat, height, width)
    streams = list(enc.streams)
    if container_version >= 2 and BITS_BACK_GUARD:
        streams.append(_pack_guard([_latent_crc(enc.z_hat.numpy(), enc.y_hat.numpy()), _crc(x_hat)]))
    data = container.pack(header, streams)
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


def decompress_details(data: bytes, model: Optional[ModelLike] = None, *,
                       timeout: Optional[float] = None) -> DecompressResult:
    """Decodes a file; returns the image with the decoded latents (for verification) and the header.

    ``timeout``: base seconds of the range decoder's time limit (default :data:`DECODE_TIMEOUT`, plus
    :data:`DECODE_SECONDS_PER_SYMBOL` per symbol; ``0`` disables it); see :func:`decompress`."""
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
        allowed = (2,) if header.version == 1 else (2, 3)
    else:
        allowed = (2,) if header.version == 1 else (3,)
    if len(streams) not in allowed:
        raise CorruptBitstreamError(f"expected {' or '.join(map(str, allowed))} streams in a version "
                                    f"{header.version} {header.method} file, found {len(streams)}")
    if header.method in BB_METHODS:
        from tfc_inference import bits_back
        if not hasattr(model, "q_params"):
            raise ModelMismatchError(f"{header.method} files need a bits-back model")
        guard = _parse_guard(streams[2], None) if len(streams) == 3 else None
        y_shape = [-(-header.height // Z_STRIDE) * 4, -(-header.width // Z_STRIDE) * 4]
        dec = bits_back.decode(model, streams[:2], y_shape)
        if guard is not None and _latent_crc(dec.z_hat.numpy(), dec.y_hat.numpy()) != guard[0][0]:
            raise _mismatch("checksum over the decoded latents differs")
        image = reconstruct(model, dec.y_hat, header.height, header.width)
        return DecompressResult(image=image, header=header, y_symbols=dec.y_hat.numpy().astype(np.int32),
                                z_hat=dec.z_hat.numpy(), seconds=time.perf_counter() - t0,
                                side_info=dec.side_info, side_info_error=dec.side_info_error,
                                exact=None if guard is None else _check_exact(image, guard[0][1]))
    z_shape = tf.constant([-(-header.height // Z_STRIDE), -(-header.width // Z_STRIDE)], tf.int32)
    exact = None
    if header.version == 1:
        count = int(np.prod(z_shape.numpy())) * (model.config.hyper_latent_channels
                                                 + 16 * model.config.latent_channels)
        y_hat, z_hat, y_symbols = _bounded(lambda: model.entropy_decode(
            tf.constant([streams[1]]), tf.constant([streams[0]]), z_shape), "the latents", count, timeout)
        image = reconstruct(model, y_hat, header.height, header.width)
    else:
        y_hat, z_hat, y_symbols, image_crc = _decode_v2(model, streams, z_shape, model.config.num_scales, timeout)
        image = reconstruct(model, y_hat, header.height, header.width)
        exact = _check_exact(image, image_crc)
    return DecompressResult(image=image, header=header, y_symbols=y_symbols.numpy(), z_hat=z_hat.numpy(),
                            seconds=time.perf_counter() - t0, exact=exact)


def decompress(data: bytes, model: Optional[ModelLike] = None, *, timeout: Optional[float] = None) -> np.ndarray:
    """Decodes a file written by :func:`compress` to a uint8 [H, W, 3] RGB image.

    Raises:
      BitstreamError: the bytes are not a valid file (its subclasses say why: truncated, corrupt, version,
        EntropyModelMismatchError for an intact file this decoder's numerics cannot decode exactly,
        DecodeTimeoutError when TFC's range decoder does not finish on a crafted stream within the time limit).
      ModelNotFoundError / ModelMismatchError: the model the file needs is missing or differs.
    """
    return decompress_details(data, model, timeout=timeout).image


__all__ = ["compress", "decompress", "decompress_details", "read_header", "CompressResult", "DecompressResult",
           "BitstreamError"]
