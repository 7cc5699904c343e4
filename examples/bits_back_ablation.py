"""Bits-back ablation on Kodak images with a bits-back model: amortized, SGA [M1], SGA+BB [M2], BB without SGA
[A5] and BB fully amortized [A6] (the paper's Figure 5 methods), with real files and random side information.

Net bpp = (file bits - side-information bits) / pixels; every file is decoded again and the side information
checked.  Results are cached in ``<out>/cache.jsonl`` (resumable).

    python examples/bits_back_ablation.py --model bitsback-mse-0.01 --images ../shared/data/kodak --count 4
"""
import argparse
import math
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfc_inference import evaluate, zoo  # noqa: E402
from tfc_inference.data import list_images, read_image  # noqa: E402

METHODS = ["amortized", "sga", "sga+bb", "bb-no-sga", "bb-amortized"]
LABELS = {"amortized": "amortized", "sga": "SGA [M1]", "sga+bb": "SGA+BB [M2]", "bb-no-sga": "BB, no SGA [A5]",
          "bb-amortized": "BB amortized [A6]"}


def y_grid_cost(model, path):
    """(y bpp on the mean-shifted grid, y bpp on the integers, MSE of each) for the amortized latents."""
    import tensorflow as tf
    from tfc_inference import codec
    image = read_image(path)
    x = tf.constant(codec.pad_to_multiple(image)[None], tf.float32)
    y, z = model.encode_latents(x)
    _, z_hat = model.discretize_amortized(y, z)
    mu, index = model.coding_params(z_hat)
    h, w = image.shape[:2]
    out = []
    for y_hat in (model.round_y(y, mu), tf.round(y)):
        x_hat = model.synthesize(y_hat)[:, :h, :w]
        out.append((float(model.bits_y(y_hat, mu, index)[0]) / (h * w),
                    float(tf.reduce_mean(tf.math.squared_difference(x[:, :h, :w], x_hat)))))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="bitsback-mse-0.01", help="bits-back zoo model")
    p.add_argument("--images", default="../shared/data/kodak", help="folder of test images")
    p.add_argument("--count", type=int, default=4, help="how many images (sorted by name)")
    p.add_argument("--iterations", type=int, default=2000, help="SGA / SGA+BB steps")
    p.add_argument("--bbvi-iterations", type=int, default=2000, help="reproducible BBVI steps")
    p.add_argument("--out", default="examples/results/bits_back_ablation", help="output folder")
    args = p.parse_args()
    model = zoo.load_model(args.model)
    paths = list_images([args.images])[:args.count]
    os.makedirs(args.out, exist_ok=True)
    records = evaluate.run(model, paths, METHODS, os.path.join(args.out, "cache.jsonl"),
                           iterations=args.iterations, bbvi_iterations=args.bbvi_iterations)
    images = sorted({r["image"] for r in records})
    rows = []
    for m in METHODS:
        recs = [r for r in records if r["method"] == m]
        bpp = np.mean([r.get("net_bpp", r["bpp"]) for r in recs])
        rows.append((m, bpp, np.mean([r["estimated_bpp"] for r in recs]), np.mean([r["psnr"] for r in recs]),
                     np.mean([r["loss"] for r in recs]), np.mean([r["encode_seconds"] for r in recs]),
                     np.mean([r["decode_seconds"] for r in recs]),
                     all(r["decoded_exactly"] and r.get("side_info_recovered", True) for r in recs)))
    base = rows[0][4]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([LABELS[r[0]] for r in rows], [100 * (r[4] / base - 1) for r in rows])
    ax.set_ylabel("R-D loss change vs amortized (%)")
    ax.set_title(f"{args.model}, {len(images)} images")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "ablation.png"), dpi=120)
    lines = ["# Bits-back ablation", "",
             f"Model `{args.model}` (lambda {model.config.lmbda}), images {', '.join(images)}, {args.iterations} "
             f"SGA steps, {args.bbvi_iterations} BBVI steps. Machine: {records[0]['machine']}.",
             "bpp = net file bpp (side information subtracted) for bits-back methods, file bpp otherwise.", "",
             "| method | bpp | est. bpp | PSNR dB | R-D loss | vs amortized | encode s | decode s | exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, bpp, ebpp, psnr, loss, enc, dec, ok in rows:
        lines.append(f"| {LABELS[m]} | {bpp:.4f} | {ebpp:.4f} | {psnr:.2f} | {loss:.4f} | "
                     f"{100 * (loss / base - 1):+.2f}% | {enc:.1f} | {dec:.1f} | {ok} |")
    lines += ["", "Where the bits of the bits-back methods go (bpp, means over the images; z is coded on a grid of "
              "spacing 1/4, whose extra log2(4) bits per element appear in both the z bits and the bits back):", "",
              "| method | y under P(y\\|z) | z under P(z) | bits back (Q) | net z | bits back beyond the grid's "
              "2 bits/element |", "|---|---|---|---|---|---|"]
    grid_bits = lambda r: 2.0 * model.config.hyper_latent_channels * math.ceil(r["height"] / 64) * math.ceil(
        r["width"] / 64)
    for m in METHODS:
        recs = [r for r in records if r["method"] == m and "bits_y" in r]
        if recs:
            per_pixel = lambda key: np.mean([r[key] / (r["height"] * r["width"]) for r in recs])
            lines.append(f"| {LABELS[m]} | {per_pixel('bits_y'):.4f} | {per_pixel('bits_z'):.4f} | "
                         f"{per_pixel('bits_back'):.4f} | {per_pixel('bits_z') - per_pixel('bits_back'):.4f} | "
                         f"{np.mean([(r['bits_back'] - grid_bits(r)) / (r['height'] * r['width']) for r in recs]):.4f} |")
    grid_y = np.mean([y_grid_cost(model, p) for p in paths], axis=0)
    bb = [r for r in records if r["method"] == "sga+bb"]
    if bb and rows[1][0] == "sga":
        saved = np.mean([(r["bits_back"] - grid_bits(r)) / (r["height"] * r["width"]) for r in bb])
        lines += ["", f"Reading: the bits back beyond the grid's fixed 2 bits per z element, i.e. what bits-back "
                  f"coding can save at most, is {saved:.4f} bpp: q(z | y) of this model is nearly a point mass, "
                  f"so the marginalization gap it can close is tiny. SGA+BB's net rate is "
                  f"{rows[2][1] - rows[1][1]:+.4f} bpp vs SGA at {rows[2][3] - rows[1][3]:+.2f} dB; the main "
                  "difference is the grid of y: bits-back must fix y_hat before z is sampled, so y_hat lives on "
                  "the integers, while SGA codes y on the mean-shifted grid round(y - mu) + mu, which costs fewer "
                  f"bits under the Gaussian p(y | z). Measured on the amortized latents of the same images: y "
                  f"costs {grid_y[0]:.4f} bpp on the shifted grid and {grid_y[1]:.4f} bpp on the integers "
                  f"({100 * (grid_y[1] / grid_y[0] - 1):+.1f}%), for an MSE change of {grid_y[3] - grid_y[2]:+.2f} "
                  "(lambda * that in the loss). A bits-back model whose q keeps a wider posterior (longer "
                  "training of the net-rate objective) is what would make M2 beat M1."]
    lines += ["", "![ablation](ablation.png)", ""]
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
