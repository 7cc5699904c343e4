"""Classical image codecs run live, and the published rate-distortion curves this project compares against.

Live codecs (through ``imagecodecs``; each one is probed at run time and skipped if the installed build lacks it):

=========  ===========================================================================  ======================
name       codec and settings                                                            quality sweep (level)
=========  ===========================================================================  ======================
jpeg       JPEG 4:2:0, libjpeg-turbo, optimized Huffman tables                           quality 5 ... 95
jpeg2000   JPEG 2000, OpenJPEG, one quality layer; ``level`` is OpenJPEG's target PSNR   22 ... 44 dB
webp       WebP lossy, libwebp, method 6 (slowest, best)                                 quality 0 ... 95
avif       AVIF 4:4:4 (libavif's default for RGB input), speed 6                         quality 10 ... 95
jpegxl     JPEG XL, libjxl, default effort 7; ``level`` is the quality (-> distance)     quality 10 ... 95
=========  ===========================================================================  ======================

Every (codec, level, image) run appends one JSON line to a cache, like :mod:`tfc_inference.evaluate`: the file
size in bits, bpp, PSNR (RGB, 0..255, over all three channels), MS-SSIM (RGB, 0..255 inputs, ``max_val`` 255;
``null`` for images too small for its five scales), encode and decode seconds.  A killed run resumes where it
stopped.

Published curves are returned in CompressAI's results-JSON layout (``name``, ``description``, ``results`` with
``bpp``, ``psnr-rgb`` and, where published, ``ms-ssim-rgb``), with ``source`` naming the file.  The few files used
are copied into ``tfc_inference/assets/rd/`` (``SOURCES.md`` there says where each came from), so reports do not
need ``../shared``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

ASSETS_RD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "rd")


# ------------------------------------------------------------------------------------------------------------------
# metrics
def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB over all pixels and the three RGB channels, peak 255 (inf for identical images)."""
    mse = float(np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def ms_ssim_fits(height: int, width: int, scales: int = 5, filter_size: int = 11) -> bool:
    """Whether the coarsest of MS-SSIM's scales (each halving the size, rounding up) still holds the filter."""
    for _ in range(scales - 1):
        height, width = (height + 1) // 2, (width + 1) // 2
    return min(height, width) >= filter_size


def ms_ssim(original: np.ndarray, decoded: np.ndarray) -> Optional[float]:
    """MS-SSIM of two uint8 RGB images (``tf.image.ssim_multiscale`` on 0..255, max_val 255, its default five
    scales and weights); None if the images are too small for five scales."""
    if not ms_ssim_fits(*original.shape[:2]):
        return None
    import tensorflow as tf
    a = tf.constant(original, tf.float32)
    b = tf.constant(decoded, tf.float32)
    return float(tf.image.ssim_multiscale(a, b, max_val=255.0))


# ------------------------------------------------------------------------------------------------------------------
# live codecs
@dataclasses.dataclass(frozen=True)
class Codec:
    name: str
    description: str
    levels: Sequence[float]
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes], np.ndarray]
    #: settings string stored in each record (part of the cache key: other settings are other runs)
    settings: str


def _codecs() -> Dict[str, Codec]:
    import imagecodecs as ic
    return {c.name: c for c in [
        Codec("jpeg", "JPEG 4:2:0 (libjpeg-turbo, optimized Huffman)", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
              lambda x, q: ic.jpeg8_encode(x, level=int(q), subsampling="420", optimize=True), ic.jpeg8_decode,
              "subsampling=420,optimize"),
        Codec("jpeg2000", "JPEG 2000 (OpenJPEG, target PSNR, 1 layer)", (22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44),
              lambda x, q: ic.jpeg2k_encode(x, level=float(q)), ic.jpeg2k_decode, "level=psnr"),
        Codec("webp", "WebP (libwebp lossy, method 6)", (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
              lambda x, q: ic.webp_encode(x, level=int(q), lossless=False, method=6), ic.webp_decode,
              "lossy,method=6"),
        Codec("avif", "AVIF 4:4:4 (libavif, speed 6)", (10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
              lambda x, q: ic.avif_encode(x, level=int(q), speed=6), ic.avif_decode, "speed=6"),
        Codec("jpegxl", "JPEG XL (libjxl, effort 7)", (10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
              lambda x, q: ic.jpegxl_encode(x, level=int(q)), ic.jpegxl_decode, "effort=default"),
    ]}


def codec_versions() -> str:
    import imagecodecs as ic
    return ic.__version__


def available_codecs() -> Dict[str, Codec]:
    """The codecs of :func:`_codecs` that round-trip a small test image in this installation."""
    try:
        codecs = _codecs()
    except ImportError:
        return {}
    x = (np.arange(32 * 32 * 3) % 251).astype(np.uint8).reshape(32, 32, 3)
    ok = {}
    for name, c in codecs.items():
        try:
            y = c.decode(c.encode(x, c.levels[len(c.levels) // 2]))
        except Exception:  # noqa: BLE001 - a codec missing from this build raises anything from ImportError on
            continue
        if y.shape == x.shape and y.dtype == np.uint8:
            ok[name] = c
    return ok


def baseline_key(rec: Dict[str, Any]) -> tuple:
    return (rec["codec"], rec.get("settings"), rec["image"], float(rec["level"]))


def run(image_paths: Sequence[str], cache_path: str, codecs: Optional[Iterable[str]] = None,
        levels: Optional[Dict[str, Sequence[float]]] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """Encodes and decodes every image with every codec at every level not yet in ``cache_path``; returns the
    records of all requested runs (cached ones included), in (image, codec, level) order."""
    from tqdm import tqdm
    from tfc_inference.data import read_image
    from tfc_inference.evaluate import append_record, load_cache, machine_description
    available = available_codecs()
    names = list(available) if codecs is None else list(codecs)
    for n in names:
        if n not in available:
            raise ValueError(f"codec {n!r} is not available here (available: {', '.join(available) or 'none'})")
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    done = {baseline_key(r): r for r in load_cache(cache_path) if "codec" in r}
    keys, jobs = [], []
    for path in image_paths:
        for n in names:
            c = available[n]
            for q in (levels or {}).get(n, c.levels):
                key = (n, c.settings, os.path.basename(path), float(q))
                keys.append(key)
                if key not in done:
                    jobs.append((path, c, q, key))
    machine, version = machine_description(), codec_versions()
    bar = tqdm(jobs, desc="baselines", unit="run", disable=not progress)
    image_cache: Dict[str, np.ndarray] = {}
    for path, c, q, key in bar:
        bar.set_postfix_str(f"{os.path.basename(path)} {c.name} {q:g}")
        if path not in image_cache:
            image_cache.clear()
            image_cache[path] = read_image(path)
        x = image_cache[path]
        t0 = time.perf_counter()
        data = bytes(c.encode(x, q))
        encode_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        y = np.asarray(c.decode(data))
        decode_seconds = time.perf_counter() - t0
        if y.shape != x.shape:
            raise RuntimeError(f"{c.name} decoded {os.path.basename(path)} to shape {y.shape}, expected {x.shape}")
        h, w = x.shape[:2]
        mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
        rec = dict(codec=c.name, method=c.name, description=c.description, settings=c.settings, level=float(q),
                   image=os.path.basename(path), height=h, width=w, bits=8 * len(data),
                   bpp=8 * len(data) / (h * w), mse=mse, psnr=psnr(x, y), ms_ssim=ms_ssim(x, y),
                   encode_seconds=encode_seconds, decode_seconds=decode_seconds, imagecodecs=version,
                   machine=machine)
        append_record(cache_path, rec)
        done[key] = rec
    bar.close()
    return [done[k] for k in keys]


# ------------------------------------------------------------------------------------------------------------------
# published curves
def _shared_rd() -> Optional[str]:
    """``../shared/data/rd`` next to the repository, or ``$TFC_INFERENCE_RD`` (the full published sets)."""
    env = os.environ.get("TFC_INFERENCE_RD")
    if env:
        return env
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidate = os.path.join(os.path.dirname(here), "shared", "data", "rd")
    return candidate if os.path.isdir(candidate) else None


def _rows(path: str) -> np.ndarray:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rows.append([float(v) for v in line.replace(",", " ").split()])
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return np.array(rows, dtype=np.float64)


def curve(name: str, bpp: Sequence[float], psnr_values: Sequence[float], description: str = "",
          ms_ssim_values: Optional[Sequence[Optional[float]]] = None, **extra) -> Dict[str, Any]:
    """A curve in CompressAI's results-JSON layout (plus ``extra`` top-level keys such as ``source``)."""
    results = {"bpp": [float(v) for v in bpp], "psnr-rgb": [float(v) for v in psnr_values]}
    if ms_ssim_values is not None:
        results["ms-ssim-rgb"] = [None if v is None else float(v) for v in ms_ssim_values]
    return dict(name=name, description=description, results=results, **extra)


def load_mandt_csv(path: str, name: Optional[str] = None, description: str = "") -> Dict[str, Any]:
    """A curve of the paper's repository (``bpp, PSNR`` rows, no header; bpp is the *estimated* rate)."""
    a = _rows(path)
    return curve(name or os.path.splitext(os.path.basename(path))[0], a[:, 0], a[:, 1], description,
                 source=path, rate="estimated")


def load_tfc_txt(path: str, name: Optional[str] = None, description: str = "") -> Dict[str, Any]:
    """A TensorFlow Compression results file (``#`` comments, then ``bpp, value`` rows) of PSNR_sRGB_RGB."""
    a = _rows(path)
    if description == "":
        with open(path) as f:
            first = f.readline().strip()
        description = first.lstrip("# ").strip()
    return curve(name or os.path.splitext(os.path.basename(path))[0], a[:, 0], a[:, 1], description, source=path,
                 rate="file")


def load_compressai_json(path: str, name: Optional[str] = None) -> Dict[str, Any]:
    """A CompressAI results JSON (``name``, ``description``, ``results``: ``bpp``, ``psnr-rgb``, ...)."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "results" not in data or "bpp" not in data["results"]:
        raise ValueError(f"{path}: not a CompressAI results JSON (no results.bpp)")
    r = data["results"]
    return curve(name or data.get("name", os.path.basename(path)), r["bpp"], r["psnr-rgb"],
                 data.get("description", ""), r.get("ms-ssim-rgb"), source=path, rate="file")


#: The published curves a report shows: (key, loader, path under assets/rd, label).
PUBLISHED = {
    "kodak": [
        ("bpg444", load_tfc_txt, "tensorflow_compression/kodak/PSNR_sRGB_RGB/bpg444.txt", "BPG 4:4:4 (TFC results)"),
        ("paper-base", load_mandt_csv, "mandt-lab_improving-inference/kodak/mbt2018-psnr.csv",
         "paper: Base Hyperprior [M3] (est. rate)"),
        ("paper-sga", load_mandt_csv, "mandt-lab_improving-inference/kodak/sga-psnr.csv",
         "paper: SGA [M1] (est. rate)"),
        ("paper-sga+bb", load_mandt_csv, "mandt-lab_improving-inference/kodak/bb_sga-psnr.csv",
         "paper: SGA+BB [M2] (est. rate)"),
        ("mbt2018-mean", load_tfc_txt, "tensorflow_compression/kodak/PSNR_sRGB_RGB/minnen-2018-neurips-no-context.txt",
         "Minnen 2018 mean-scale, no context (TFC results)"),
        ("j2k-opj", load_tfc_txt, "tensorflow_compression/kodak/PSNR_sRGB_RGB/j2k-opj5.txt",
         "JPEG2000 OpenJPEG (TFC results)"),
        ("bpg444-compressai", load_compressai_json, "compressai/kodak/bpg_444_x265_ycbcr.json",
         "BPG 4:4:4 x265 (CompressAI results)"),
        ("vtm", load_compressai_json, "compressai/kodak/vtm.json", "VTM 4:4:4 (CompressAI results)"),
    ],
    "tecnick": [
        ("bpg444", load_tfc_txt, "tensorflow_compression/tecnick/PSNR_sRGB_RGB/bpg444.txt",
         "BPG 4:4:4 (TFC results, Tecnick)"),
        ("paper-base", load_mandt_csv, "mandt-lab_improving-inference/tecnick/mbt2018-psnr.csv",
         "paper: Base Hyperprior [M3] (est. rate, Tecnick)"),
        ("paper-sga", load_mandt_csv, "mandt-lab_improving-inference/tecnick/sga-psnr.csv",
         "paper: SGA [M1] (est. rate, Tecnick)"),
        ("paper-sga+bb", load_mandt_csv, "mandt-lab_improving-inference/tecnick/bb_sga-psnr.csv",
         "paper: SGA+BB [M2] (est. rate, Tecnick)"),
        ("mbt2018-mean", load_tfc_txt,
         "tensorflow_compression/tecnick/PSNR_sRGB_RGB/minnen-2018-neurips-no-context.txt",
         "Minnen 2018 mean-scale, no context (TFC results, Tecnick)"),
        ("j2k-opj", load_tfc_txt, "tensorflow_compression/tecnick/PSNR_sRGB_RGB/j2k-opj5.txt",
         "JPEG2000 OpenJPEG (TFC results, Tecnick)"),
    ],
}


def published_curves(dataset: str, root: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """The published curves of ``dataset`` ("kodak" or "tecnick") that exist under ``root`` (default: the copies in
    ``tfc_inference/assets/rd``), keyed as in :data:`PUBLISHED`; each has ``label`` and ``source``."""
    root = root or ASSETS_RD
    out = {}
    for key, loader, rel, label in PUBLISHED.get(dataset, []):
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            c = loader(path)
            c.update(key=key, label=label, kind="published", source=os.path.relpath(path, root))
            out[key] = c
    return out
