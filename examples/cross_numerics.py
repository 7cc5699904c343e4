"""Decoding on other numerics: encode with oneDNN kernels on, decode with them off, in separate processes.

``TF_ENABLE_ONEDNN_OPTS`` switches TensorFlow's CPU kernels (oneDNN vs Eigen), which changes floating point
results in the last bits, as another CPU or a GPU would.  For every Kodak image and zoo model this script

1. encodes (amortized) with oneDNN on, as a version 1 file (no guard: "before") and a version 2 file (pinned
   scale indexes and guard: "after"), and stores the encoder's continuous scale indexes and reconstruction;
2. decodes both files in a fresh process with oneDNN off, recomputes the scale indexes from the decoded z and
   counts how many differ from the encoder's, and classifies each decode: bit-identical image, image that
   differs slightly (synthesis numerics only), garbage (latents decoded wrongly, no error) or a detected
   mismatch (``EntropyModelMismatchError``).

    python examples/cross_numerics.py [--images DIR] [--count 24] [--out examples/results/reliability]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _env(onednn: str) -> dict:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _models():
    from tfc_inference import zoo
    return [m["name"] for m in zoo.list_models()]


def encode_phase(work: str, images, models) -> None:
    import numpy as np
    from tfc_inference import codec, zoo
    from tfc_inference.data import read_image
    for name in models:
        model = zoo.load_model(name)
        for path in images:
            x = read_image(path)
            key = f"{name}__{os.path.splitext(os.path.basename(path))[0]}"
            for version in (1, 2):
                r = codec.compress(model, x, container_version=version)
                with open(os.path.join(work, f"{key}.v{version}.tfci"), "wb") as f:
                    f.write(r.data)
            _, f_enc = codec._y_params_fn(model)(r.z_hat)
            np.savez(os.path.join(work, f"{key}.npz"), f=f_enc.numpy(), recon=r.reconstruction, z=r.z_hat,
                     y=r.y_symbols, pins=r.extra["pinned_indexes"], table_crc=codec._table_crc(model))
            print(key, flush=True)


def decode_phase(work: str, out_json: str) -> None:
    import numpy as np
    import tensorflow as tf
    from tfc_inference import codec, container, zoo
    from tfc_inference.errors import TFCInferenceError
    from tfc_inference.models import Z_STRIDE
    records = []
    for npz in sorted(p for p in os.listdir(work) if p.endswith(".npz")):
        key = npz[:-4]
        ref = np.load(os.path.join(work, npz))
        rec = {"key": key, "pins": int(ref["pins"])}
        for version in (1, 2):
            with open(os.path.join(work, f"{key}.v{version}.tfci"), "rb") as f:
                data = f.read()
            rec[f"bytes_v{version}"] = len(data)
            header, streams = container.unpack(data)
            model = zoo.load_model(header.model_name)
            if version == 2:  # what the decoder's own floor() would pick, from its decoded z, and after the pins
                try:
                    model._require_coders()
                    z_shape = [-(-header.height // Z_STRIDE), -(-header.width // Z_STRIDE)]
                    z_hat = model._z_coder.decompress(tf.constant([streams[0]]), z_shape)
                    rec["z_identical"] = bool(np.array_equal(z_hat.numpy(), ref["z"]))
                    _, f_dec = codec._y_params_fn(model)(z_hat)
                    f_dec, f_enc = f_dec.numpy(), ref["f"]
                    rec["indexes"] = int(f_enc.size)
                    rec["index_diffs"] = int(np.sum(np.floor(f_dec) != np.floor(f_enc)))
                    rec["max_abs_index_delta"] = float(np.max(np.abs(f_dec - f_enc)))
                    _, positions, sides = codec._parse_guard(streams[2], f_dec.size)
                    index = np.floor(f_dec).ravel()
                    if len(positions):
                        k = np.rint(f_dec.ravel()[positions])
                        index[positions] = np.clip(np.where(sides, k, k - 1), 0, model.config.num_scales - 1)
                    rec["index_diffs_after_pins"] = int(np.sum(index != np.floor(f_enc).ravel()))
                    rec["tables_identical"] = codec._table_crc(model) == int(ref["table_crc"])
                except tf.errors.OpError as e:  # z itself could not be decoded: counted, not analysed
                    rec["analysis_error"] = e.message.splitlines()[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    d = codec.decompress_details(data)
                except TFCInferenceError as e:
                    rec[f"v{version}"] = type(e).__name__
                    continue
            if not np.array_equal(d.y_symbols, ref["y"]):
                outcome = "garbage"
            elif np.array_equal(d.image, ref["recon"]):
                outcome = "identical"
            else:
                outcome = "inexact"
            rec[f"v{version}"] = outcome
            rec[f"v{version}_max_pixel_diff"] = int(np.max(np.abs(d.image.astype(int) - ref["recon"].astype(int))))
            if version == 2:
                rec["v2_exact_flag"] = d.exact
        records.append(rec)
        print(json.dumps(rec), flush=True)
    with open(out_json, "w") as f:
        json.dump(records, f, indent=1)


def summarize(records) -> str:
    import collections
    lines = ["| model | files | indexes per file | files with index flips (own floor) | flipped indexes | "
             "max abs index delta | pinned per file (mean) | index flips after pins | v1 (before): outcomes | "
             "v2 (after): outcomes | v2 cost bytes (mean) | v2 cost % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    by_model = collections.defaultdict(list)
    for r in records:
        by_model[r["key"].split("__")[0]].append(r)
    for name, recs in sorted(by_model.items()) + [("**all**", records)]:
        def outcomes(v):
            c = collections.Counter(r[v] for r in recs)
            return ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
        cost = [r["bytes_v2"] - r["bytes_v1"] for r in recs]
        pct = [100.0 * (r["bytes_v2"] - r["bytes_v1"]) / r["bytes_v1"] for r in recs]
        ok = [r for r in recs if "index_diffs" in r]
        lines.append(f"| {name} | {len(recs)} | {ok[0]['indexes'] if ok else '-'} | "
                     f"{sum(r['index_diffs'] > 0 for r in ok)} | {sum(r['index_diffs'] for r in ok)} | "
                     f"{max((r['max_abs_index_delta'] for r in ok), default=0):.2e} | "
                     f"{sum(r['pins'] for r in recs) / len(recs):.1f} | "
                     f"{sum(r['index_diffs_after_pins'] for r in ok)} | {outcomes('v1')} | {outcomes('v2')} | "
                     f"{sum(cost) / len(cost):.1f} | {sum(pct) / len(pct):.3f} |")
    return "\n".join(lines)


def counts(records) -> dict:
    """Mismatching files (decoded image differs from the encoder's, or an error) before and after, and silent
    garbage decodes (latents decoded wrongly without any error)."""
    return {
        "files": len(records),
        "tables_identical": sum(bool(r.get("tables_identical")) for r in records),
        "z_identical": sum(bool(r.get("z_identical")) for r in records),
        "files_with_index_flips": sum(r.get("index_diffs", 0) > 0 for r in records),
        "flipped_indexes": sum(r.get("index_diffs", 0) for r in records),
        "index_flips_after_pins": sum(r.get("index_diffs_after_pins", 0) for r in records),
        "v1_bit_identical_images": sum(r["v1"] == "identical" for r in records),
        "v2_bit_identical_images": sum(r["v2"] == "identical" for r in records),
        "v1_latents_not_decoded": sum(r["v1"] not in ("identical", "inexact") for r in records),
        "v2_latents_not_decoded": sum(r["v2"] not in ("identical", "inexact") for r in records),
        "v1_mismatching_files": sum(r["v1"] != "identical" for r in records),
        "v1_silent_garbage": sum(r["v1"] == "garbage" for r in records),
        "v2_mismatching_files": sum(r["v2"] != "identical" for r in records),
        "v2_detected": sum(r["v2"] not in ("identical", "inexact", "garbage") for r in records),
        "v2_inexact_warned": sum(r["v2"] == "inexact" and r.get("v2_exact_flag") is False for r in records),
        "v2_silent_garbage": sum(r["v2"] == "garbage" for r in records),
        "v2_silent_inexact": sum(r["v2"] == "inexact" and r.get("v2_exact_flag") is not False for r in records),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="/work/shared/data/kodak")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--models", default="", help="comma-separated zoo models (default: every zoo model)")
    p.add_argument("--out", default=os.path.join(REPO, "examples", "results", "reliability"))
    p.add_argument("--phase", choices=("all", "encode", "decode"), default="all", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--from-json", metavar="FILE", help="only rebuild the tables from a cross_numerics.json")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            records = json.load(f)
        print(summarize(records))
        print(json.dumps(counts(records), indent=1))
        return 0
    if args.phase == "encode":
        encode_phase(args.work, json.loads(os.environ["XN_IMAGES"]), json.loads(os.environ["XN_MODELS"]))
        return 0
    if args.phase == "decode":
        decode_phase(args.work, os.path.join(args.work, "records.json"))
        return 0
    images = sorted(os.path.join(args.images, f) for f in os.listdir(args.images) if f.endswith(".png"))
    images = images[:args.count]
    models = [m for m in args.models.split(",") if m] or _models()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        env = _env("1")
        env.update(XN_IMAGES=json.dumps(images), XN_MODELS=json.dumps(models))
        subprocess.run([sys.executable, __file__, "--phase", "encode", "--work", work], env=env, check=True)
        t1 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--phase", "decode", "--work", work], env=_env("0"), check=True)
        t2 = time.perf_counter()
        with open(os.path.join(work, "records.json")) as f:
            records = json.load(f)
    with open(os.path.join(args.out, "cross_numerics.json"), "w") as f:
        json.dump(records, f, indent=1)
    table = summarize(records)
    c = counts(records)
    with open(os.path.join(args.out, "cross_numerics_counts.json"), "w") as f:
        json.dump(dict(c, images=len(images), models=models, encode_seconds=round(t1 - t0, 1),
                       decode_seconds=round(t2 - t1, 1)), f, indent=1)
    text = (f"Encoded with TF_ENABLE_ONEDNN_OPTS=1 ({t1 - t0:.0f} s), decoded with TF_ENABLE_ONEDNN_OPTS=0 "
            f"({t2 - t1:.0f} s) in separate processes; {len(images)} images x {len(models)} models "
            f"({', '.join(models)}), amortized.\n\n{table}\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in c.items()) + "\n")
    with open(os.path.join(args.out, "cross_numerics.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
