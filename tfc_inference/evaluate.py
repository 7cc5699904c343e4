"""Resumable evaluation: really compress and decompress images with a model and several inference methods.

Each finished (model, image, method, settings) run appends one JSON line to a cache file; a killed run is
started again with the same arguments and skips everything already in the cache.  A record holds the actual file
size, the estimated rate, PSNR, the R-D loss, timings, whether decoding reproduced the encoder's reconstruction
exactly, MS-SSIM (RGB, 0..255, ``null`` for images too small for its five scales; records written before it
was added lack the field), and (for iterative methods) the true-R-D trace.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
import zlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from tfc_inference import codec
from tfc_inference.codec import BB_METHODS
from tfc_inference.data import read_image


def record_key(rec: Dict[str, Any]) -> tuple:
    return (rec["fingerprint"], rec["image"], rec.get("discretizer", rec["method"]), rec.get("iterations", 0),
            rec.get("schedule"), rec.get("seed", 0), rec.get("learning_rate"))


def load_cache(path: str) -> List[Dict[str, Any]]:
    """Records of a JSON-lines cache; a torn last line (killed while writing) is ignored."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def append_record(cache_path: str, record: Dict[str, Any]) -> None:
    """Appends one JSON line to the cache and syncs it, so a killed run loses at most the record in flight.

    The line goes out in one ``write`` on an ``O_APPEND`` descriptor under an exclusive ``flock``, so several
    processes (``shard``) can share one cache without interleaving their lines.  After a torn last line (a
    process killed while writing) the record starts on a new line, so the torn line alone is lost."""
    data = (json.dumps(record) + "\n").encode()
    fd = os.open(cache_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: rely on O_APPEND alone
            pass
        size = os.lseek(fd, 0, os.SEEK_END)
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock


def parse_shard(text: str) -> Tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> ``(i, n)``; raises ValueError with a readable message otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_jobs(keys: Sequence[tuple], jobs: Sequence[tuple], shard: Tuple[int, int] = (0, 1),
               offset: int = 0) -> List[tuple]:
    """The jobs of shard ``(i, n)``: those whose key is at a position ``p`` of ``keys`` (every requested run, in
    order) with ``(offset + p) % n == i``.  Positions in ``keys`` do not depend on what the cache already holds, so
    workers that start at different moments still split the runs without overlap or gaps.  ``offset``: how many
    runs of a larger plan (earlier models or stages) come before these, so that a plan of many one-run calls
    (one image, one method per model) still alternates between the workers instead of giving every run to
    worker 0."""
    index, count = shard
    if count == 1:
        return list(jobs)
    position = {key: p for p, key in enumerate(keys)}
    return [job for job in jobs if (offset + position[job[-1]]) % count == index]


def machine_description() -> str:
    """CPU model, core count and OS, for results tables."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def cpu_allocator() -> str:
    """TF's CPU allocator in this process: "bfc" (pooling; the package's default) or "malloc" (TF's own default)."""
    return "bfc" if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("true", "1") else "malloc"


def _tf_threads() -> int:
    """TF's intra-op thread count for this process (0: TF's default, one per core)."""
    import tensorflow as tf
    return int(tf.config.threading.get_intra_op_parallelism_threads()
               or os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0)


def _rounding_options(method: str, rounding, three_class: bool) -> Dict[str, Any]:
    """The rounding options that apply to ``method`` (the annealing methods only)."""
    if method in ("sga", "deterministic-annealing") and (rounding is not None or three_class):
        return dict(rounding=rounding, three_class=three_class)
    return {}


def _bb_sga_options(schedule, learning_rate, rounding, three_class) -> Dict[str, Any]:
    """The options of the SGA stage of ``sga+bb`` that differ from its defaults."""
    out = {k: v for k, v in dict(schedule=schedule, learning_rate=learning_rate, rounding=rounding).items()
           if v is not None}
    if three_class:
        out["three_class"] = True
    return out


def with_preset(preset: Optional[str], **options) -> Dict[str, Any]:
    """``run`` / ``plan`` options with a named preset (:mod:`tfc_inference.presets`) filled in: its iterations,
    schedule, learning rate and rounding replace the given ones."""
    if preset is None:
        return options
    from tfc_inference import presets
    options.update(presets.get(preset).settings())
    return options


def plan(model, image_paths: Sequence[str], methods: Iterable[str], cache_path: str, iterations: int = 2000,
         schedule: Optional[str] = None, seed: int = 0, learning_rate: Optional[float] = None,
         bbvi_iterations: int = 2000, rounding=None, three_class: bool = False,
         records: Optional[List[Dict[str, Any]]] = None):
    """What :func:`run` would do: ``(keys, jobs, done)``: the cache key of every requested run, the runs not yet in
    the cache (``(path, method, iterations, schedule, learning_rate, variant, key)``), and the cached records by
    key.  ``records``: the cache's records if already loaded."""
    from tfc_inference.inference import get_optimizer
    methods = list(methods)
    fingerprint = model.fingerprint().hex()
    done = {record_key(r): r for r in (load_cache(cache_path) if records is None else records) if "fingerprint" in r}
    jobs, keys = [], []
    for path in image_paths:
        for method in methods:
            its = 0 if method == "amortized" else iterations
            sched = None
            lr = None
            variant = method
            if method in BB_METHODS:
                sched, lr = f"bits-back(bbvi={bbvi_iterations})", None
                if method != "sga+bb":
                    its = 0
                elif _bb_sga_options(schedule, learning_rate, rounding, three_class):
                    # an SGA stage other than the default: its own curve (default runs keep their old keys)
                    opt = get_optimizer(model, "sga", schedule, learning_rate, seed, its,
                                        **_rounding_options("sga", rounding, three_class))
                    sched = f"bits-back(bbvi={bbvi_iterations}, sga={opt.schedule.name})"
                    lr = opt.learning_rate
                    variant = method + opt.discretizer.describe()[len("sga"):]
            elif method != "amortized":
                opt = get_optimizer(model, method, schedule, learning_rate, seed, its,
                                    **_rounding_options(method, rounding, three_class))
                sched, lr, variant = opt.schedule.name, opt.learning_rate, opt.discretizer.describe()
            key = (fingerprint, os.path.basename(path), variant, its, sched,
                   seed if (its or method in BB_METHODS) else 0, lr)
            keys.append(key)
            if key not in done:
                jobs.append((path, method, its, sched, lr, variant, key))
    return keys, jobs, done


def run(model, image_paths: Sequence[str], methods: Iterable[str], cache_path: str, iterations: int = 2000,
        schedule: Optional[str] = None, seed: int = 0, learning_rate: Optional[float] = None, eval_every: int = 50,
        keep_trace: bool = True, progress: bool = True, bbvi_iterations: int = 2000,
        side_info_bytes: int = 65536, rounding=None, three_class: bool = False,
        shard: Tuple[int, int] = (0, 1), shard_offset: int = 0) -> List[Dict[str, Any]]:
    """Evaluates every (image, method) pair not yet in ``cache_path``; returns all matching records.

    ``shard=(i, n)`` runs only the i-th of n disjoint shares of the runs (:func:`shard_jobs`), for n worker
    processes sharing one cache (e.g. one TF thread each: on 2 cores two 1-thread SGA workers do ~1.3x the
    image-steps per second of one 2-thread worker); ``shard_offset``: the number of runs of the calls before this
    one in a larger plan (:func:`shard_jobs`).

    ``schedule`` may be a name or a :class:`~tfc_inference.schedules.ExponentialSchedule`; ``rounding`` and
    ``three_class`` choose the rounding distribution of ``sga`` / ``deterministic-annealing`` (recorded as
    ``discretizer``, e.g. ``sga[cosine]``).

    Bits-back methods carry ``side_info_bytes`` random bytes; their records add the net rate (file minus side
    information) as ``net_bpp`` (and use it in ``loss``) and whether the side information came back exactly."""
    from tqdm import tqdm
    from tfc_inference import report
    from tfc_inference.baselines import ms_ssim
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    fingerprint = model.fingerprint().hex()
    keys, jobs, done = plan(model, image_paths, methods, cache_path, iterations=iterations, schedule=schedule,
                            seed=seed, learning_rate=learning_rate, bbvi_iterations=bbvi_iterations,
                            rounding=rounding, three_class=three_class)
    jobs = shard_jobs(keys, jobs, shard, shard_offset)
    label = getattr(model, 'zoo_name', 'model') + (f" [{shard[0] + 1}/{shard[1]}]" if shard[1] > 1 else "")
    bar = tqdm(jobs, desc=f"evaluating {label}", unit="run", disable=not progress, position=shard[0])
    for path, method, its, sched, lr, variant, key in bar:
        bar.set_postfix_str(f"{os.path.basename(path)} {variant}")
        x = read_image(path)
        options = {} if method == "amortized" else dict(iterations=its, schedule=schedule, seed=seed,
                                                        learning_rate=learning_rate, eval_every=eval_every,
                                                        progress=False,
                                                        **_rounding_options(method, rounding, three_class))
        side_info = None
        if method in BB_METHODS:
            # bits-back needs side information to carry: random bytes, more than popping z consumes
            side_info = np.random.default_rng([seed, zlib.crc32(os.path.basename(path).encode())]).bytes(side_info_bytes)
            options = dict(iterations=its, seed=seed, side_info=side_info, bbvi_iterations=bbvi_iterations)
            if method == "sga+bb":
                options.update(_bb_sga_options(schedule, learning_rate, rounding, three_class))
        # process CPU time next to wall-clock time: a paused (SIGSTOP) or crowded worker inflates only the latter
        t0, c0 = time.perf_counter(), time.process_time()
        result = codec.compress(model, x, method=method, **options)
        encode_seconds, encode_cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        c0 = time.process_time()
        decoded = codec.decompress_details(result.data, model)
        decode_cpu_seconds = time.process_time() - c0
        rec = dict(model=getattr(model, "zoo_name", "unnamed"), fingerprint=fingerprint,
                   image=os.path.basename(path), height=result.height, width=result.width, method=method,
                   discretizer=variant,
                   iterations=its, schedule=sched, seed=seed if (its or method in BB_METHODS) else 0,
                   learning_rate=lr,
                   lmbda=result.lmbda, bits=result.bits, payload_bits=result.payload_bits,
                   estimated_bits=result.estimated_bits, bpp=result.bpp, estimated_bpp=result.estimated_bpp,
                   mse=result.mse, psnr=result.psnr,
                   loss=result.estimated_bpp + result.lmbda * result.mse, file_loss=result.rd_loss,
                   encode_seconds=encode_seconds, decode_seconds=decoded.seconds,
                   encode_cpu_seconds=encode_cpu_seconds, decode_cpu_seconds=decode_cpu_seconds,
                   seconds_per_iteration=result.extra.get("seconds_per_iteration", 0.0),
                   decoded_exactly=bool(np.array_equal(decoded.image, result.reconstruction)
                                        and np.array_equal(decoded.y_symbols, result.y_symbols)),
                   ms_ssim=ms_ssim(x, decoded.image),
                   machine=machine_description(), workers=shard[1], tf_threads=_tf_threads(),
                   cpu_allocator=cpu_allocator())
        if side_info is not None:
            e = result.extra
            rec.update(side_info_bits=e["side_info_bits"], net_bits=e["net_bits"],
                       net_bpp=e["net_bits"] / result.num_pixels, estimated_bits=e["estimated_net_bits"],
                       estimated_bpp=e["estimated_net_bits"] / result.num_pixels, bits_y=e["bits_y"],
                       bits_z=e["bits_z"], bits_back=e["bits_back"], pad_words=e["pad_words"],
                       bbvi_iterations=e["bbvi_iterations"], side_info_recovered=decoded.side_info == side_info,
                       bbvi_seconds_per_iteration=e.get("bbvi_seconds_per_iteration", 0.0))
            rec["loss"] = report.rd_loss(rec, result.lmbda)  # net rate only if the side information came back
        if keep_trace and "trace" in result.extra:
            rec["trace"] = [dict(step=t["step"], tau=t["tau"], loss=t["loss"][0],
                                 relaxed_loss=None if t["relaxed_loss"] is None else t["relaxed_loss"][0],
                                 bpp=t["bpp"][0], psnr=t["psnr"][0]) for t in result.extra["trace"]]
        append_record(cache_path, rec)
        done[key] = rec
    bar.close()
    if shard[1] > 1:  # the other workers' records
        done.update({record_key(r): r for r in load_cache(cache_path) if "fingerprint" in r})
        return [done[k] for k in keys if k in done]
    return [done[k] for k in keys]
