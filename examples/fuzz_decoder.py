"""Long decoder fuzz: feed ``decompress`` thousands of damaged, truncated, random and tampered files.

    python examples/fuzz_decoder.py --count 10000 [--size 64] [--seed 0] [--timeout 60]
                                    [--out examples/results/reliability]

Setup (in a child process): three tiny zoo models (8 channels; a hyperprior, a second hyperprior with other
weights, a bits-back model) are saved to a scratch zoo, and a ``--size`` x ``--size`` crop of the bundled Kodak
image is coded into *base files*: version 2 (guard stream) and version 1 files of the first model, a file of the
second model, and a bits-back (``bb-amortized``) file.

Cases (deterministic in ``--seed``): every prefix length of every base file, then random cases of these kinds:

* ``flip1`` / ``flipN``: one / 2..16 random bit flips anywhere in the file;
* ``random`` / ``random-magic``: random bytes, optionally after a valid magic number and version byte;
* ``splice``: a random chunk deleted, inserted or duplicated;
* ``tamper-stream``: bit flips, truncation or extension inside one stream, the file then re-packed with a
  *valid* CRC, so the damage reaches the range decoders (what the container cannot detect by itself);
* ``tamper-header``: one header field replaced (version, method, model name, fingerprint, image shape
  including absurd ones, stream count), with a valid CRC;
* ``other-model``: a file decoded with another model than the one that wrote it, or a header that names
  another zoo model (with or without its fingerprint);
* ``guard``: the version 2 guard stream altered (CRCs, pin list), with a valid CRC.

Each case is decoded by a long-lived worker process (``codec.decompress_details``); the parent enforces a
per-case time limit (``--timeout``: the worker is killed and the case counted as a *hang*) and counts a worker
that dies as a *crash*.  The decoder's own time limit (``--decode-timeout``, passed to ``decompress_details``)
ends TFC's endless range-decoder loop with ``DecodeTimeoutError``; the worker, whose abandoned decoder thread
keeps spinning, is then replaced.  Outcomes:

* ``error:<Class>``: a documented :mod:`tfc_inference.errors` exception (``BitstreamError`` or ``ModelError``);
* ``image:exact``: an image of the declared shape, bit-identical to a base file's reconstruction;
* ``image:inexact-warned``: an image of the declared shape with an ``InexactDecodeWarning``;
* ``image:other``: an image of the declared shape that differs from every reference, without warning (allowed
  only where nothing can detect it: tampered version 1 files, which carry no guard);
* ``bad-image``, ``crash:<Class>``, ``crash:worker-died``, ``hang``: failures (must be 0).

Writes ``fuzz_summary.json`` and ``fuzz_summary.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import platform
import struct
import sys
import tempfile
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TINY = dict(num_filters=8, latent_channels=8, hyper_filters=8, hyper_latent_channels=8)
MAGIC = b"TFCI"
KINDS = ("flip1", "flipN", "random", "random-magic", "splice", "tamper-stream", "tamper-header", "other-model",
         "guard")
#: Relative frequency of the random kinds (the deep kinds, which reach the TF decoders, get more weight).
WEIGHTS = (2, 2, 1, 1, 1, 4, 3, 1, 2)
ABSURD_SHAPES = [(0, 1), (1, 0), (32769, 1), (1, 32769), (32768, 32768), (4097, 4097), (1 << 20, 1 << 20),
                 (1 << 34, 5), (4096, 4097)]


# ------------------------------------------------------------------------------------------------------------------
# container bytes, written here from the documented layout (no TF needed in the parent)
def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_pack(f: dict, streams) -> bytes:
    """A container with a valid CRC from header fields that may be invalid (``f``: version, method_id, name,
    fingerprint, height, width, optional count)."""
    name = f["name"]
    body = (MAGIC + bytes([f["version"] & 0xFF, f["method_id"] & 0xFF, len(name) & 0xFF]) + name
            + f["fingerprint"] + leb128(f["height"]) + leb128(f["width"])
            + bytes([(len(streams) if f.get("count") is None else f["count"]) & 0xFF])
            + b"".join(leb128(len(s)) for s in streams) + b"".join(streams))
    return body + struct.pack(">I", zlib.crc32(body))


def parse(data: bytes):
    from tfc_inference import container
    header, streams = container.unpack(data)
    fields = dict(version=header.version, method_id=container.METHODS.index(header.method),
                  name=header.model_name.encode(), fingerprint=header.fingerprint, height=header.height,
                  width=header.width)
    return fields, list(streams)


def flip_bits(rng, b: bytes, n: int) -> bytes:
    if not b:
        return b
    out = bytearray(b)
    for _ in range(n):
        i = int(rng.integers(len(out)))
        out[i] ^= 1 << int(rng.integers(8))
    return bytes(out)


def make_case(rng, kind: str, bases: dict):
    """(data, model to decode with or None, note) for one random case of ``kind``."""
    names = sorted(bases)
    base_name = names[int(rng.integers(len(names)))]
    base = bases[base_name]
    data = base["data"]
    fields, streams = parse(data)
    if kind == "flip1":
        return flip_bits(rng, data, 1), None, base_name
    if kind == "flipN":
        return flip_bits(rng, data, int(rng.integers(2, 17))), None, base_name
    if kind == "random":
        return rng.bytes(int(rng.integers(0, 2 * len(data)))), None, "random"
    if kind == "random-magic":
        version = int(rng.choice([1, 2, int(rng.integers(256))]))
        return MAGIC + bytes([version]) + rng.bytes(int(rng.integers(0, 2 * len(data)))), None, f"v{version}"
    if kind == "splice":
        i = int(rng.integers(len(data)))
        n = int(rng.integers(1, 64))
        op = int(rng.integers(3))
        if op == 0:
            return data[:i] + data[i + n:], None, f"{base_name} delete"
        if op == 1:
            return data[:i] + rng.bytes(n) + data[i:], None, f"{base_name} insert"
        return data[:i] + data[i:i + n] + data[i:], None, f"{base_name} duplicate"
    if kind == "tamper-stream":
        s = int(rng.integers(len(streams)))
        op = int(rng.integers(5))
        st = streams[s]
        if op <= 1:
            st = flip_bits(rng, st, 1 if op == 0 else int(rng.integers(2, 33)))
        elif op == 2:
            st = st[:int(rng.integers(len(st) + 1))]
        elif op == 3:
            st = st + rng.bytes(int(rng.integers(1, 64)))
        else:
            st = rng.bytes(len(st))
        streams = list(streams)
        streams[s] = st
        return raw_pack(fields, streams), None, f"{base_name} stream {s} op {op}"
    if kind == "tamper-header":
        field = ["version", "method_id", "name", "fingerprint", "shape", "shape-absurd", "count"][
            int(rng.integers(7))]
        f = dict(fields)
        if field == "version":
            f["version"] = int(rng.choice([0, 1, 2, 3, 255]))
        elif field == "method_id":
            f["method_id"] = int(rng.integers(0, 12))
        elif field == "name":
            f["name"] = [b"no-such-model", b"../etc/passwd", b"/tmp", b".hidden", b"x" * 64,
                         base["name"][:-1], b"\xff\xfe"][int(rng.integers(7))]
        elif field == "fingerprint":
            f["fingerprint"] = rng.bytes(8)
        elif field == "shape":
            f["height"] = int(rng.integers(1, 300))
            f["width"] = int(rng.integers(1, 300))
        elif field == "shape-absurd":
            f["height"], f["width"] = ABSURD_SHAPES[int(rng.integers(len(ABSURD_SHAPES)))]
        else:
            op = int(rng.integers(4))
            streams = list(streams)
            if op == 0:
                streams = streams[:-1] or [b""]
            elif op == 1:
                streams = streams + [rng.bytes(int(rng.integers(0, 20)))]
            elif op == 2:
                streams = streams[::-1]
            else:
                f["count"] = int(rng.choice([0, 9, 255]))
        if field.startswith("shape") and int(rng.integers(4)) == 0:
            f["version"] = 1  # a version 1 header (no guard expected) on version 2 streams, or v1 streams
        return raw_pack(f, streams), None, f"{base_name} {field}"
    if kind == "other-model":
        others = [n for n in names if bases[n]["model"] != base["model"]]
        other = bases[others[int(rng.integers(len(others)))]]
        op = int(rng.integers(3))
        if op == 0:  # decode with an explicitly given other model
            return data, other["model"], f"{base_name} decoded with {other['model']}"
        f = dict(fields, name=other["model"].encode())
        if op == 2:  # claims to be the other model, fingerprint included: the payload reaches its decoders
            f["fingerprint"] = other["fingerprint"]
        return raw_pack(f, streams), None, f"{base_name} named {other['model']} op {op}"
    if kind == "guard":
        if fields["version"] != 2 or len(streams) != 3:
            base_name = "v2"
            fields, streams = parse(bases["v2"]["data"])
        guard = streams[2]
        op = int(rng.integers(5))
        if op == 0:  # one CRC changed
            i = 4 * int(rng.integers(3))
            guard = guard[:i] + rng.bytes(4) + guard[i + 4:]
        elif op == 1:  # random pins
            count = int(rng.integers(0, 40))
            guard = (guard[:12] + leb128(count) + b"".join(leb128(int(rng.integers(0, 50))) for _ in range(count))
                     + rng.bytes(-(-count // 8)))
        elif op == 2:  # an absurd pin count
            guard = guard[:12] + leb128(int(rng.integers(1 << 20, 1 << 34))) + guard[13:]
        elif op == 3:
            guard = flip_bits(rng, guard, int(rng.integers(1, 5)))
        else:
            guard = guard[:int(rng.integers(len(guard)))]
        return raw_pack(fields, [streams[0], streams[1], guard]), None, f"guard op {op}"
    raise ValueError(kind)


def generate(count: int, seed: int, bases: dict):
    """Yields (kind, data, model, note): every prefix of every base file first, then random kinds."""
    import numpy as np
    n = 0
    for name in sorted(bases):
        data = bases[name]["data"]
        for i in range(len(data)):
            if n >= count:
                return
            yield "prefix", data[:i], None, f"{name}[:{i}]"
            n += 1
    rng = np.random.default_rng(seed)
    p = np.asarray(WEIGHTS, float) / sum(WEIGHTS)
    while n < count:
        kind = KINDS[int(rng.choice(len(KINDS), p=p))]
        data, model, note = make_case(rng, kind, bases)
        yield kind, data, model, note
        n += 1


# ------------------------------------------------------------------------------------------------------------------
# child processes
def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def setup(work: str, size: int, conn) -> None:
    """Saves the tiny models and writes the base files and reference images into ``work``."""
    _quiet_tf()
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    import tfc_inference
    from tfc_inference import codec, zoo
    from tfc_inference.models import ModelConfig, build_model
    zoo_dir = os.path.join(work, "zoo")
    models = {}
    for name, kind, seed in (("fuzz-a", "hyperprior", 0), ("fuzz-b", "hyperprior", 1), ("fuzz-bb", "bitsback", 2)):
        tf.keras.utils.set_random_seed(seed)
        zoo.save_checkpoint(build_model(ModelConfig(kind=kind, **TINY)), os.path.join(zoo_dir, name))
        models[name] = zoo.load_model(os.path.join(zoo_dir, name))
    with Image.open(tfc_inference.DEMO_IMAGE) as img:
        kodak = np.asarray(img.convert("RGB"))
    image = np.ascontiguousarray(kodak[200:200 + size, 300:300 + size])
    results = {"v2": codec.compress(models["fuzz-a"], image),
               "v1": codec.compress(models["fuzz-a"], image, container_version=1),
               "other": codec.compress(models["fuzz-b"], image),
               "bb": codec.compress(models["fuzz-bb"], image, method="bb-amortized", side_info=b"fuzz" * 8)}
    bases, refs = {}, {}
    for key, r in results.items():
        bases[key] = dict(data=r.data, model=r.model_name, fingerprint=models[r.model_name].fingerprint(),
                          name=r.model_name.encode(), guard_bytes=r.extra.get("guard_bytes"),
                          pinned=r.extra.get("pinned_indexes"))
        refs[key] = r.reconstruction
    np.savez(os.path.join(work, "refs.npz"), **refs)
    os.makedirs(os.path.join(work, "base"))
    for key, b in bases.items():
        with open(os.path.join(work, "base", key + ".tfci"), "wb") as f:
            f.write(b["data"])
    conn.send(bases)


def _memory_kb():
    peak = rss = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return peak, rss


def worker(work: str, conn, decode_timeout: float = 10.0) -> None:
    """Decodes the cases it receives; replies (outcome, seconds, peak RSS kB, RSS kB, detail)."""
    _quiet_tf()
    os.environ["TFC_INFERENCE_CHECKPOINTS"] = os.path.join(work, "zoo")
    import warnings
    import numpy as np
    from tfc_inference import codec, container
    from tfc_inference.errors import BitstreamError, InexactDecodeWarning, ModelError
    refs = np.load(os.path.join(work, "refs.npz"))
    ref_crcs = {zlib.crc32(np.ascontiguousarray(refs[k]).tobytes()) for k in refs.files}
    # Warm up: the first decode of each model in a process builds its tables (for bits-back models the prior
    # tails, tens of seconds), a one-time cost per model and process that is not the case's.
    t0 = time.perf_counter()
    for name in sorted(os.listdir(os.path.join(work, "base"))):
        with open(os.path.join(work, "base", name), "rb") as f:
            codec.decompress_details(f.read())
    conn.send(("ready", time.perf_counter() - t0))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        data, model = msg
        detail = ""
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                d = codec.decompress_details(data, model, timeout=decode_timeout)
            except (BitstreamError, ModelError) as e:
                outcome, detail = f"error:{type(e).__name__}", str(e)[:200]
            except Exception as e:  # noqa: BLE001  (anything else is a crash of the decoder)
                outcome, detail = f"crash:{type(e).__name__}", repr(e)[:500]
            else:
                h, w = container.unpack(data)[0].height, container.unpack(data)[0].width
                if d.image.dtype != np.uint8 or d.image.shape != (h, w, 3):
                    outcome = "bad-image"
                    detail = f"{d.image.dtype} {d.image.shape}, declared {h}x{w}"
                elif zlib.crc32(np.ascontiguousarray(d.image).tobytes()) in ref_crcs:
                    outcome = "image:exact"
                elif any(issubclass(c.category, InexactDecodeWarning) for c in caught):
                    outcome = "image:inexact-warned"
                else:
                    outcome = "image:other"
                    guarded = d.header.method not in codec.BB_METHODS or len(container.unpack(data)[1]) == 3
                    detail = (f"version {d.header.version} {'bits-back' if d.header.method in codec.BB_METHODS else 'hyperprior'}"
                              f" file {'with' if d.header.version == 2 and guarded else 'without'} guard")
                if d.side_info_error:  # bits-back: the image is returned, the side information is not
                    detail = (detail + "; side information not recovered")[:300]
        seconds = time.perf_counter() - t0
        conn.send((outcome, seconds) + _memory_kb() + (detail,))


class Worker:
    def __init__(self, ctx, work: str, decode_timeout: float = 10.0):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(work, child, decode_timeout), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(600):
            raise RuntimeError("fuzz worker did not start")
        msg = self.conn.recv()
        assert msg[0] == "ready"
        self.warmup_seconds = msg[1]

    def run(self, data, model, timeout: float):
        """(outcome, seconds, peak kB, rss kB, detail); outcome ``hang`` / ``crash:worker-died`` on failure."""
        t0 = time.perf_counter()
        try:
            self.conn.send((data, model))
            if self.conn.poll(timeout):
                return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return ("crash:worker-died", time.perf_counter() - t0, 0, 0, f"exit code {self.proc.exitcode}")
        if not self.proc.is_alive():
            return ("crash:worker-died", time.perf_counter() - t0, 0, 0, f"exit code {self.proc.exitcode}")
        return ("hang", time.perf_counter() - t0, 0, 0, f"no answer within {timeout} s")

    def peak_kb(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return 0

    def stop(self, kill: bool = False):
        if not kill:
            try:
                self.conn.send(None)
                self.proc.join(30)
            except (BrokenPipeError, OSError):
                pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# ------------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=10000, help="number of cases")
    p.add_argument("--size", type=int, default=64, help="side of the square test image in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    p.add_argument("--decode-timeout", type=float, default=10.0,
                   help="the decoder's own time limit (codec.decompress_details(timeout=...)), below --timeout")
    p.add_argument("--out", default=os.path.join(REPO, "examples", "results", "reliability"))
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfci_fuzz_") as work:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=setup, args=(work, args.size, child))
        proc.start()
        bases = parent.recv()
        proc.join()
        setup_seconds = time.perf_counter() - t_start
        w = Worker(ctx, work, args.decode_timeout)
        per_kind = collections.defaultdict(collections.Counter)
        outcomes = collections.Counter()
        failures, examples = [], {}
        slowest = []  # (seconds, case, kind, note, outcome)
        image_other = collections.Counter()
        warmup = [round(w.warmup_seconds, 1)]
        peak_kb = rss_first = rss_last = 0
        restarts = 0
        seconds_total = 0.0
        t_cases = time.perf_counter()
        for i, (kind, data, model, note) in enumerate(generate(args.count, args.seed, bases)):
            outcome, seconds, peak, rss, detail = w.run(data, model, args.timeout)
            seconds_total += seconds
            per_kind[kind][outcome] += 1
            outcomes[outcome] += 1
            examples.setdefault(outcome, f"{kind} {note}: {detail}"[:300])
            slowest = sorted(slowest + [(round(seconds, 3), i, kind, note, outcome)], reverse=True)[:5]
            if outcome == "image:other":
                image_other[detail] += 1
            peak_kb = max(peak_kb, peak)
            if rss:
                rss_first = rss_first or rss
                rss_last = rss
            bad = outcome.startswith(("crash", "hang", "bad-image"))
            if bad:
                failures.append(dict(case=i, kind=kind, note=note, outcome=outcome, detail=detail,
                                     data=data.hex() if len(data) < 4096 else None))
            if bad or outcome == "error:DecodeTimeoutError":  # a stuck decoder thread spins on in the worker
                peak_kb = max(peak_kb, w.peak_kb())
                w.stop(kill=True)
                w = Worker(ctx, work, args.decode_timeout)
                warmup.append(round(w.warmup_seconds, 1))
                restarts += 1
            if (i + 1) % 1000 == 0:
                print(f"{i + 1} cases, {dict(outcomes)}", flush=True)
        peak_kb = max(peak_kb, w.peak_kb())
        w.stop()
    total = sum(outcomes.values())
    crashes = sum(n for o, n in outcomes.items() if o.startswith("crash"))
    hangs = outcomes.get("hang", 0)
    v1, v2 = bases["v1"], bases["v2"]
    summary = {
        "cases": total, "seed": args.seed, "image": f"{args.size}x{args.size} crop of kodim23",
        "outcomes": dict(sorted(outcomes.items())),
        "per_kind": {k: dict(sorted(c.items())) for k, c in sorted(per_kind.items())},
        "crashes": crashes, "hangs": hangs, "bad_images": outcomes.get("bad-image", 0),
        "failures": failures[:50], "examples": dict(sorted(examples.items())),
        "image_other_by_file": dict(image_other),
        "max_seconds_per_case": slowest[0][0] if slowest else 0.0,
        "slowest_cases": [dict(seconds=t, case=c, kind=k, note=n, outcome=o) for t, c, k, n, o in slowest],
        "worker_warmup_seconds": warmup,
        "mean_ms_per_case": round(1000 * seconds_total / max(total, 1), 3),
        "timeout_seconds": args.timeout, "worker_restarts": restarts,
        "worker_peak_rss_mb": round(peak_kb / 1024, 1),
        "worker_rss_mb_after_first_case": round(rss_first / 1024, 1),
        "worker_rss_mb_after_last_case": round(rss_last / 1024, 1),
        "base_files_bytes": {k: len(b["data"]) for k, b in sorted(bases.items())},
        "guard_overhead_bytes": len(v2["data"]) - len(v1["data"]),
        "guard_stream_bytes": v2["guard_bytes"], "pinned_indexes": v2["pinned"],
        "setup_seconds": round(setup_seconds, 1), "fuzz_seconds": round(time.perf_counter() - t_cases, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    try:
        from importlib.metadata import version
        summary["machine"] += f", TensorFlow {version('tensorflow')}"
    except Exception:  # noqa: BLE001
        pass
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fuzz_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    classes = sorted(outcomes)
    lines = [f"Decoder fuzz: {total} cases (seed {args.seed}, {summary['image']}), {crashes} crashes, {hangs} "
             f"hangs, {summary['bad_images']} bad images; max {summary['max_seconds_per_case']} s per case "
             f"({slowest[0][2]} {slowest[0][3]}), mean {summary['mean_ms_per_case']} ms; worker peak RSS "
             f"{summary['worker_peak_rss_mb']} MB (RSS {summary['worker_rss_mb_after_first_case']} MB after the "
             f"first case, {summary['worker_rss_mb_after_last_case']} MB after the last).", "",
             "| kind | cases | " + " | ".join(classes) + " |",
             "|---|---:|" + "---:|" * len(classes)]
    for kind, c in sorted(per_kind.items()):
        lines.append(f"| {kind} | {sum(c.values())} | " + " | ".join(str(c.get(o, 0)) for o in classes) + " |")
    lines.append("| **all** | " + f"{total} | " + " | ".join(f"**{outcomes[o]}**" for o in classes) + " |")
    lines += ["", f"Base files (bytes): {summary['base_files_bytes']}; guard overhead of version 2 over version 1: "
              f"{summary['guard_overhead_bytes']} bytes (guard stream {summary['guard_stream_bytes']} bytes, "
              f"{summary['pinned_indexes']} pinned indexes)."]
    lines += ["", "Images that differ from every reference without a warning, by file: "
              + (", ".join(f"{k}: {n}" for k, n in sorted(image_other.items())) or "none") + "."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "fuzz_summary.md"), "w") as f:
        f.write(text)
    print(text)
    return 0 if crashes == hangs == summary["bad_images"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
