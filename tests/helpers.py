"""Shared utilities of the unit tests: tiny models and checkpoints, Kodak crops, hand-made images and containers.

Everything expensive (training a tiny model, writing a checkpoint) is computed once per test process and cached.
Nothing here calls the code under test to produce *expected* values: containers are assembled byte by byte,
images are decoded with PIL directly, PNGs can be written without PIL.
"""
from __future__ import annotations

import atexit
import functools
import io
import os
import shutil
import struct
import tempfile
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tfc_inference import zoo as _zoo  # noqa: E402

# Throw-away test checkpoints skip freezing their coding tables (a minute per bits-back model: the prior's tails
# are estimated); tests/test_zoo.py::FrozenTablesTest turns it on, the shipped checkpoints all have them.
_zoo.FREEZE_TABLES = False

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KODIM23 = os.path.join(REPO, "tfc_inference", "assets", "kodim23.png")

#: The architecture every test model uses: 8 channels everywhere (fast on CPU).
TINY = dict(num_filters=8, latent_channels=8, hyper_filters=8, hyper_latent_channels=8)

_ROOT: Optional[str] = None


class TestCase(tf.test.TestCase):
    """tf.test.TestCase without its deprecated ``test_session`` method (which pytest would collect and skip)."""

    test_session = None


def temp_root() -> str:
    """One scratch folder per test process, removed at exit."""
    global _ROOT
    if _ROOT is None:
        _ROOT = tempfile.mkdtemp(prefix="tfci_tests_")
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def fresh_dir(prefix: str = "t") -> str:
    return tempfile.mkdtemp(prefix=prefix + "_", dir=temp_root())


# ------------------------------------------------------------------------------------------------------------------
# images
@functools.lru_cache(maxsize=None)
def _kodak() -> np.ndarray:
    with Image.open(KODIM23) as img:
        arr = np.asarray(img.convert("RGB"))
    arr.setflags(write=False)
    return arr


def kodak() -> np.ndarray:
    """kodim23 as a uint8 [512, 768, 3] array (a copy)."""
    return _kodak().copy()


def kodak_crop(height: int, width: int, top: int = 200, left: int = 300) -> np.ndarray:
    """A crop of kodim23 (contiguous uint8 copy); sizes up to 512x768 (the origin is moved to fit)."""
    img = _kodak()
    top = min(top, img.shape[0] - height)
    left = min(left, img.shape[1] - width)
    return np.ascontiguousarray(img[top:top + height, left:left + width])


def encode_image(arr: np.ndarray, mode: Optional[str] = None, fmt: str = "PNG", **save_kw) -> bytes:
    """Encodes an array with PIL (``mode`` e.g. "L", "RGBA", "P"); returns the file bytes."""
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr, mode=mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_kw)
    return buf.getvalue()


def raw_png(arr: np.ndarray, bit_depth: int, color_type: int) -> bytes:
    """A PNG written without PIL (so that 16-bit RGB/RGBA, which PIL cannot write, can be made).

    color_type: 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA.
    """
    h, w = arr.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + np.ascontiguousarray(arr[i]).astype(dtype).tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


# ------------------------------------------------------------------------------------------------------------------
# containers assembled by hand (the documented layout of format version 1)
METHOD_NAMES = ("amortized", "sga", "map", "ste", "uniform-noise", "deterministic-annealing",
                "sga+bb", "bb-no-sga", "bb-amortized")


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def craft_container(streams: Sequence[bytes], *, method_id: int = 0, name: bytes = b"tiny",
                    fingerprint: bytes = b"\x01\x02\x03\x04\x05\x06\x07\x08", height: int = 64, width: int = 96,
                    version: int = 1, name_len: Optional[int] = None, count: Optional[int] = None,
                    height_bytes: Optional[bytes] = None, trailing: bytes = b"", magic: bytes = b"TFCI",
                    valid_crc: bool = True) -> bytes:
    """A version-1 container built from the documented layout, with a valid CRC unless told otherwise.

    Every field can be set to a value ``container.pack`` would refuse, to test the reader's checks.
    """
    body = (magic + bytes([version, method_id, len(name) if name_len is None else name_len]) + name + fingerprint
            + (leb128(height) if height_bytes is None else height_bytes) + leb128(width)
            + bytes([len(streams) if count is None else count])
            + b"".join(leb128(len(s)) for s in streams) + b"".join(streams) + trailing)
    crc = zlib.crc32(body) if valid_crc else zlib.crc32(body) ^ 0xFFFFFFFF
    return body + struct.pack(">I", crc)


# ------------------------------------------------------------------------------------------------------------------
# models
def tiny_config(kind: str = "hyperprior", **overrides):
    from tfc_inference.models import ModelConfig
    kw = dict(TINY, kind=kind)
    kw.update(overrides)
    return ModelConfig(**kw)


def tiny_model(kind: str = "hyperprior", seed: int = 0, name: Optional[str] = None, **overrides):
    """An untrained tiny model with deterministic initial weights (``zoo_name`` set if ``name`` is given)."""
    from tfc_inference.models import build_model
    tf.keras.utils.set_random_seed(seed)
    model = build_model(tiny_config(kind, **overrides))
    if name is not None:
        model.zoo_name = name
    return model


def weights_of(model) -> List[np.ndarray]:
    return [w.numpy().copy() for w in model.weights]


def random_crops(rng: np.random.Generator, batch: int, size: int = 64) -> np.ndarray:
    img = _kodak()
    tops = rng.integers(0, img.shape[0] - size + 1, batch)
    lefts = rng.integers(0, img.shape[1] - size + 1, batch)
    return np.stack([img[t:t + size, l:l + size] for t, l in zip(tops, lefts)]).astype(np.float32)


def briefly_train(model, steps: int = 40, learning_rate: float = 1e-2, batch: int = 4, seed: int = 0) -> None:
    """A few Adam steps on 64x64 crops of kodim23, so that the entropy models are no longer at their init."""
    rng = np.random.default_rng(seed)
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    variables = model.trainable_variables

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = model(x, training=True)["loss"]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for _ in range(steps):
        step(tf.constant(random_crops(rng, batch)))


_CHECKPOINTS: Dict[str, str] = {}


def checkpoint(kind: str = "hyperprior", trained: bool = False, seed: int = 0, name: Optional[str] = None) -> str:
    """Path of a tiny zoo checkpoint (cached per process); ``trained``: a few dozen training steps first."""
    name = name or f"tiny-{kind}-{'trained' if trained else 'untrained'}-{seed}"
    if name not in _CHECKPOINTS:
        from tfc_inference import zoo
        model = tiny_model(kind, seed=seed)
        if trained:
            briefly_train(model, seed=seed)
        folder = os.path.join(fresh_dir("ckpt"), name)
        zoo.save_checkpoint(model, folder)
        _CHECKPOINTS[name] = folder
    return _CHECKPOINTS[name]


_FILES: Dict[str, bytes] = {}


def real_tfci_file(height: int = 64, width: int = 96) -> bytes:
    """A real ``.tfci`` file (amortized, untrained tiny model named ``tiny-hyperprior-untrained-0``)."""
    key = f"{height}x{width}"
    if key not in _FILES:
        from tfc_inference import codec, zoo
        model = zoo.load_model(checkpoint())
        _FILES[key] = codec.compress(model, kodak_crop(height, width)).data
    return _FILES[key]


_SHARED: Dict[str, object] = {}


def shared_model(kind: str = "hyperprior", trained: bool = False):
    """A model shared by all tests of the process: do not change its weights.

    Untrained: ``tiny_model(kind, seed=1)`` (no zoo name).  Trained: loaded from :func:`checkpoint`.
    """
    key = f"{kind}-{trained}"
    if key not in _SHARED:
        if trained:
            from tfc_inference import zoo
            _SHARED[key] = zoo.load_model(checkpoint(kind, trained=True))
        else:
            _SHARED[key] = tiny_model(kind, seed=1)
    return _SHARED[key]


def subprocess_env(**extra: str) -> Dict[str, str]:
    """The environment of a child Python process that imports this checkout's package (TF quiet), plus ``extra``."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def load_example(name: str):
    """The module of the script ``examples/<name>.py`` (examples are scripts, not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def order_dependent_sums(fn, *args) -> int:
    """TemporaryVariable nodes in the graph Grappler makes of the ``tf.function`` ``fn`` traced for ``args`` (its
    default passes, run offline as the runtime would): its memory optimizer's rewrite of a large AddN into
    AssignAdds, which sum in the order the terms finish, so the result's last bits vary from call to call."""
    import collections
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.grappler import tf_optimizer
    concrete = fn.get_concrete_function(*args)
    graph = tf.compat.v1.train.export_meta_graph(graph_def=concrete.graph.as_graph_def(add_shapes=True),
                                                 graph=concrete.graph)
    fetches = [t.name.split(":")[0] for t in tf.nest.flatten(concrete.outputs)]
    graph.collection_def["train_op"].node_list.value.extend(fetches)
    optimized = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), graph)
    ops = collections.Counter(n.op for n in optimized.node)
    for f in optimized.library.function:  # loop bodies
        ops.update(n.op for n in f.node_def)
    return ops["TemporaryVariable"]

