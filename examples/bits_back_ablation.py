"""Bits-back ablation on Kodak images with a bits-back model: amortized, SGA [M1], SGA+BB [M2], BB without SGA
[A5] and BB fully amortized [A6] (the paper's Figure 5 methods), with real files and random side information.

Net bpp = (file bits - side-information bits) / pixels; every file is decoded again and the side information
checked.  Results are cached in ``<out>/cache.jsonl`` (resumable).

Two diagnostics explain the result: SGA run on the *integer* y grid that bits-back coding needs (the grid of the
paper's own TF1 M1 and M2 scripts; an estimate -- rate from the model's probabilities, no file, since TFC's coder
only codes the mean-shifted grid; cached in ``<out>/integer_grid_sga.jsonl``), and the width of q(z | y): per z
element, bits-back coding pays about -log2 p(z) - h(q) bits where coding a point z costs about -log2 p(z), so
it can only win where the differential entropy h(q) = log2(sigma sqrt(2 pi e)) is positive (sigma > 0.242).

    python examples/bits_back_ablation.py --model bitsback-mse-0.01 --images ../shared/data/kodak --count 4

``--base`` adds the paper's own comparison: SGA+BB [M2] on the bits-back model against amortized [M3] and SGA [M1]
on a Base Hyperprior, fairly only if that hyperprior had the same starting point and training steps.
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


def integer_grid_sga(model, path: str, iterations: int) -> dict:
    """SGA with y~ and y_hat on the integers (offset 0) instead of mu + integers: the true R-D estimate."""
    import tensorflow as tf
    from tfc_inference import codec, inference, schedules

    class IntegerGridOptimizer(inference.LatentOptimizer):
        def relaxed_terms(self, x, u_y, u_z, step, valid):
            tau, s = self.schedule(step), tf.cast(step, tf.int32)
            z_t = self.discretizer(u_z, 0.0, tau, tf.stack([tf.constant(self.seed, tf.int32), 2 * s]))
            y_t = self.discretizer(u_y, 0.0, tau, tf.stack([tf.constant(self.seed, tf.int32), 2 * s + 1]))
            mu, index = self.model.y_prior_params(z_t)
            bits = self.model.bits_y(y_t, mu, index) + self.model.bits_z(z_t)
            mse = self._distortion(x, self.model.synthesize(y_t), valid)
            return bits / tf.cast(valid[0] * valid[1], tf.float32) + self.model.config.lmbda * mse, bits, mse

        def discrete_latents(self, u_y, u_z):
            return tf.round(u_y), self.model.round_z(u_z)

        def _true_terms(self, x, u_y, u_z, valid):
            y_hat, z_hat = self.discrete_latents(u_y, u_z)
            mu, index = self.model.y_prior_params(z_hat)  # continuous scales, as the bits-back y coder uses
            n = tf.cast(valid[0] * valid[1], tf.float32)
            bpp = (self.model.bits_y(y_hat, mu, index) + self.model.bits_z(z_hat)) / n
            x_hat = tf.round(tf.clip_by_value(self.model.synthesize(y_hat), 0.0, 255.0))
            mse = self._distortion(x, x_hat, valid)
            return bpp + self.model.config.lmbda * mse, bpp, mse

    image = read_image(path)
    x = tf.constant(codec.pad_to_multiple(image)[None], tf.float32)
    result = IntegerGridOptimizer(model, "sga", schedules.get(None, iterations)).run(x, image.shape[:2], iterations,
                                                                           eval_every=iterations)
    last = result.info["trace"][-1]
    return dict(fingerprint=model.fingerprint().hex(), image=os.path.basename(path), iterations=iterations,
                loss=last["loss"][0], estimated_bpp=last["bpp"][0], psnr=last["psnr"][0],
                seconds=result.info["seconds"])


def q_width(model, path: str):
    """Standard deviations of q(z | y) at the amortized y, and the mean h(q) per element in bits."""
    import tensorflow as tf
    from tfc_inference import codec
    x = tf.constant(codec.pad_to_multiple(read_image(path))[None], tf.float32)
    _, log_var = model.q_params(model.analysis_transform(x))
    std = np.exp(0.5 * log_var.numpy().ravel())
    return std, float(np.mean(np.log2(std * math.sqrt(2 * math.pi * math.e))))


def training_relation(base: str, model: str) -> str:
    """How the two models' training relates, from their configs: a fair comparison needs the same start and
    steps; a bits-back model fine-tuned *from* the base has more training behind it."""
    tb, tm = (zoo.read_info(n).get("training", {}) for n in (base, model))
    origin = str(tm.get("init_from") or "")
    if origin and os.path.basename(os.path.normpath(origin)) == os.path.basename(os.path.normpath(base)):
        return (f"`{model}` is `{base}` ({tb.get('steps', '?'):,} steps) trained {tm.get('steps', '?'):,} more "
                f"steps on the net rate, so part of any difference between them is that extra training, not "
                f"bits-back.")
    if origin and origin == str(tb.get("init_from") or "") and tb.get("steps") == tm.get("steps"):
        return f"Both trained {tm.get('steps'):,} steps from `{origin}` alike (a matched pair)."
    return (f"Training: `{base}` {tb.get('steps', '?')} steps from {tb.get('init_from') or 'scratch'}; `{model}` "
            f"{tm.get('steps', '?')} steps from {origin or 'scratch'} (not a matched pair).")


def base_comparison(args, paths, records) -> list:
    """Markdown rows: the base model's amortized [M3] and SGA [M1] next to SGA+BB [M2] of the bits-back model."""
    base_model = zoo.load_model(args.base)
    base_records = evaluate.run(base_model, paths, ["amortized", "sga"], os.path.join(args.out, "cache.jsonl"),
                                iterations=args.iterations)
    rows = [(f"`{args.base}` amortized [M3]", [r for r in base_records if r["method"] == "amortized"]),
            (f"`{args.base}` SGA [M1]", [r for r in base_records if r["method"] == "sga"]),
            (f"`{args.model}` SGA+BB [M2]", [r for r in records if r["method"] == "sga+bb"])]
    mean = lambda recs, key: float(np.mean([r.get("net_bpp", r["bpp"]) if key == "bpp" else r[key] for r in recs]))
    m3, m1 = mean(rows[0][1], "loss"), mean(rows[1][1], "loss")
    lines = [f"The paper's comparison (its Figure 5 anchors every method on the Base Hyperprior): `{args.base}` "
             f"(lambda {base_model.config.lmbda}), {args.iterations} SGA steps, same images. "
             f"{training_relation(args.base, args.model)} bpp = net file bpp for SGA+BB.", "",
             "| method | bpp | PSNR dB | R-D loss | vs base amortized | vs base SGA | encode s |",
             "|---|---|---|---|---|---|---|"]
    for label, recs in rows:
        loss = mean(recs, "loss")
        lines.append(f"| {label} | {mean(recs, 'bpp'):.4f} | {mean(recs, 'psnr'):.2f} | {loss:.4f} | "
                     f"{100 * (loss / m3 - 1):+.2f}% | {100 * (loss / m1 - 1):+.2f}% | "
                     f"{mean(recs, 'encode_seconds'):.1f} |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="bitsback-mse-0.01", help="bits-back zoo model")
    p.add_argument("--images", default="../shared/data/kodak", help="folder of test images")
    p.add_argument("--count", type=int, default=4, help="how many images (sorted by name)")
    p.add_argument("--iterations", type=int, default=2000, help="SGA / SGA+BB steps")
    p.add_argument("--bbvi-iterations", type=int, default=2000, help="reproducible BBVI steps")
    p.add_argument("--out", default="examples/results/bits_back_ablation", help="output folder")
    p.add_argument("--base", help="a Base Hyperprior: adds its amortized [M3] and SGA [M1] rows for the comparison "
                                   "with SGA+BB [M2] (fair if trained like --model: same start, steps, lr; the "
                                   "report says how the two relate)")
    args = p.parse_args()
    model = zoo.load_model(args.model)
    paths = list_images([args.images])[:args.count]
    os.makedirs(args.out, exist_ok=True)
    records = evaluate.run(model, paths, METHODS, os.path.join(args.out, "cache.jsonl"),
                           iterations=args.iterations, bbvi_iterations=args.bbvi_iterations)
    images = sorted({r["image"] for r in records})
    int_cache = os.path.join(args.out, "integer_grid_sga.jsonl")
    int_done = {(r["fingerprint"], r["image"], r["iterations"]): r for r in evaluate.load_cache(int_cache)}
    integer_rows = []
    for path in paths:
        key = (model.fingerprint().hex(), os.path.basename(path), args.iterations)
        if key not in int_done:
            int_done[key] = integer_grid_sga(model, path, args.iterations)
            evaluate.append_record(int_cache, int_done[key])
        integer_rows.append(int_done[key])
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
    widths = [q_width(model, p) for p in paths]
    bb = [r for r in records if r["method"] == "sga+bb"]
    std = np.concatenate([w[0] for w in widths])
    loss_of = {m: np.mean([r["loss"] for r in records if r["method"] == m]) for m in METHODS}
    int_loss = np.mean([r["loss"] for r in integer_rows])
    lines += ["", "Same grid: SGA with y on the integers (estimated rate, no file), the grid bits-back coding needs "
              "and the paper's TF1 M1 used:", "",
              "| method | est. bpp | PSNR dB | R-D loss | vs amortized | vs SGA+BB |", "|---|---|---|---|---|---|",
              f"| SGA, integer y grid (est.) | {np.mean([r['estimated_bpp'] for r in integer_rows]):.4f} | "
              f"{np.mean([r['psnr'] for r in integer_rows]):.2f} | {int_loss:.4f} | "
              f"{100 * (int_loss / base - 1):+.2f}% | {100 * (int_loss / loss_of['sga+bb'] - 1):+.2f}% |", "",
              f"Width of q(z | y) at the amortized y ({len(std)} elements over the images): standard deviation "
              f"quantiles 1/10/50/90/99% = {' / '.join(f'{v:.3f}' for v in np.quantile(std, [.01, .1, .5, .9, .99]))}; "
              f"{100 * np.mean(std > 0.242):.0f}% of the elements have sigma > 0.242; mean h(q) = "
              f"{np.mean([w[1] for w in widths]):+.3f} bits per element.", "",
              f"Reading: per z element, bits-back coding costs about -log2 p(z) - h(q) bits and coding a point z "
              f"costs about -log2 p(z) bits, so the most it can save is the entropy of q, "
              f"{np.mean([w[1] for w in widths]):+.3f} bits per element here (at the amortized y); measured after "
              f"SGA+BB's BBVI, the bits back beyond the grid's fixed 2 bits per element are {np.mean([(r['bits_back'] - grid_bits(r)) / (r['height'] * r['width']) for r in bb]) if bb else float('nan'):+.4f} bpp. "
              f"On the same (integer) grid, SGA+BB and SGA differ by {100 * (loss_of['sga+bb'] / int_loss - 1):+.2f}% "
              f"in R-D loss. Against SGA on the mean-shifted grid (the package's SGA, {loss_of['sga']:.4f}) "
              f"SGA+BB differs by {100 * (loss_of['sga+bb'] / loss_of['sga'] - 1):+.2f}%: on the amortized latents "
              f"y costs {grid_y[0]:.4f} bpp on the shifted grid and {grid_y[1]:.4f} bpp on the integers "
              f"({100 * (grid_y[1] / grid_y[0] - 1):+.1f}%, MSE {grid_y[3] - grid_y[2]:+.2f}). "
              + ("Bits-back pays here: SGA+BB's net file is below SGA's, and after its joint SGA + BBVI the bits "
                 "back exceed the grid's fixed cost (the last column of the table above), although q(z|y) at the "
                 "amortized y is narrow."
                 if loss_of["sga+bb"] < loss_of["sga"] else
                 "Bits-back pays only with a model whose posterior is wider than about a quarter of a grid step "
                 "(trained from scratch on the net rate for long, as in the paper, or with a floor on the variance "
                 "of q).")]
    if args.base:
        lines += [""] + base_comparison(args, paths, records)
    lines += ["", "![ablation](ablation.png)", ""]
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
