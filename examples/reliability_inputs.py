"""Time and peak memory of coding images from 1x1 to 4000x3000, and the refusal above the pixel limit.

Each size runs in a fresh process (so its peak RSS, ``VmHWM``, is its own): kodim23 resized to the size with
PIL, saved as PNG, then ``compress`` (amortized) from the file and ``decompress``; the decoded image must equal
the encoder's reconstruction.  A PNG of 4097x4097 (one row and column above the limit of
``container.MAX_PIXELS`` = 4096x4096 pixels) must be refused with ``ImageTooLargeError`` before decoding.

    python examples/reliability_inputs.py [--model hyperprior-mse-0.01] [--sizes 1x1,512x768,2000x1500,4000x3000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r'''
import json, os, sys, tempfile, time
import numpy as np
from PIL import Image
import tfc_inference
from tfc_inference import codec, zoo
from tfc_inference.errors import ImageTooLargeError

def rss():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out

width, height, model_name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with Image.open(tfc_inference.DEMO_IMAGE) as img:
    img = img.convert("RGB").resize((width, height), Image.LANCZOS)
path = os.path.join(tempfile.mkdtemp(), "in.png")
img.save(path)
del img
model = zoo.load_model(model_name)
base = rss()
rec = {"size": f"{width}x{height}", "pixels": width * height, "rss_before_mb": round(base["VmRSS"], 1)}
t0 = time.perf_counter()
try:
    r = codec.compress(model, path)
except ImageTooLargeError as e:
    rec.update(refused=True, message=str(e), seconds_to_refuse=round(time.perf_counter() - t0, 4),
               peak_rss_mb=round(rss()["VmHWM"], 1))
    print("RESULT " + json.dumps(rec))
    sys.exit(0)
rec["encode_seconds"] = round(time.perf_counter() - t0, 2)
rec["encode_peak_rss_mb"] = round(rss()["VmHWM"], 1)
rec["bytes"], rec["bpp"], rec["psnr"] = len(r.data), round(r.bpp, 4), round(r.psnr, 2)
t0 = time.perf_counter()
image = codec.decompress(r.data, model)
rec["decode_seconds"] = round(time.perf_counter() - t0, 2)
rec["peak_rss_mb"] = round(rss()["VmHWM"], 1)
rec["decoded_equals_reconstruction"] = bool(np.array_equal(image, r.reconstruction))
print("RESULT " + json.dumps(rec))
'''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hyperprior-mse-0.01")
    p.add_argument("--sizes", default="1x1,512x768,2000x1500,4000x3000,4097x4097")
    p.add_argument("--out", default=os.path.join(REPO, "examples", "results", "reliability"))
    args = p.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    records = []
    for size in args.sizes.split(","):
        w, h = map(int, size.split("x"))
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(w), str(h), args.model], env=env,
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            records.append({"size": size, "failed": proc.stderr[-2000:]})
        else:
            records.append(json.loads(lines[-1][len("RESULT "):]))
        print(json.dumps(records[-1]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "inputs_sizes.json"), "w") as f:
        json.dump({"model": args.model, "records": records}, f, indent=1)
    rows = ["| size | pixels | encode s | decode s | peak RSS MB | RSS after model load MB | bytes | bpp | "
            "decoded = encoder's reconstruction |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        if r.get("refused"):
            rows.append(f"| {r['size']} | {r['pixels']} | refused in {r['seconds_to_refuse']} s "
                        f"(ImageTooLargeError) | - | {r['peak_rss_mb']} | {r['rss_before_mb']} | - | - | - |")
        elif "failed" in r:
            rows.append(f"| {r['size']} | - | FAILED | | | | | | |")
        else:
            rows.append(f"| {r['size']} | {r['pixels']} | {r['encode_seconds']} | {r['decode_seconds']} | "
                        f"{r['peak_rss_mb']} | {r['rss_before_mb']} | {r['bytes']} | {r['bpp']} | "
                        f"{r['decoded_equals_reconstruction']} |")
    text = f"Model {args.model}, amortized, from a PNG file.\n\n" + "\n".join(rows) + "\n"
    with open(os.path.join(args.out, "inputs_sizes.md"), "w") as f:
        f.write(text)
    print(text)
    return 0 if all("failed" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
