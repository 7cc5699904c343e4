"""Rounding functions, schedules and step budgets for SGA: true R-D loss vs steps and vs seconds.

For each zoo model and image, runs every configuration below (really compressing and decompressing), recording
the true R-D loss every ``--eval-every`` steps; results go to ``<out>/cache.jsonl`` (resumable, shared with the
evaluation runner's format) and a summary ``<out>/README.md`` with plots.

    python examples/iterations_study.py --images ../shared/data/kodak --count 6 \\
        --models hyperprior-mse-0.005,hyperprior-mse-0.02 --out examples/results/iterations_study
    python examples/iterations_study.py --list            # the configurations
    # screening on crops (which candidates deserve full runs):
    python examples/iterations_study.py --models hyperprior-mse-0.01 --names kodim01,kodim03,kodim05 --crop 256 \
        --out examples/results/iterations_screening

Configurations with a 500-step budget run as separate runs (an annealing schedule must finish inside its budget;
the first 500 steps of a 2000-step run are not a 500-step run).
"""
import argparse
import dataclasses
import os
import sys
from typing import Dict, List, Optional

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfc_inference import evaluate, schedules, zoo  # noqa: E402
from tfc_inference.data import list_images  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    label: str
    iterations: int
    schedule: schedules.ExponentialSchedule
    rounding: str = "atanh"
    three_class: bool = False
    learning_rate: Optional[float] = None  # None: the method's default (0.005, the paper's)


def configs() -> List[Config]:
    """paper SGA, the improved schedule, the alternative rounding functions with a hotter, shorter warm-up
    (tau0 = 1, t0 = 200, as later SGA+ code ran), three-class rounding, and 500-step versions of each."""
    out = [Config("paper", 2000, schedules.paper()),
           Config("improved", 2000, schedules.improved())]
    warm = schedules.improved(tau0=1.0, rate=2e-3, t0=200.0)
    for rnd in ("linear", "cosine", "sigmoid_logit(a=2)"):
        out.append(Config(f"{rnd}", 2000, warm, rnd))
    out.append(Config("linear 3-class", 2000, warm, "linear", True))
    # 500-step budgets: the same shapes compressed 4x in time
    out.append(Config("improved 500", 500, schedules.improved_for(500)))
    warm500 = schedules.improved(tau0=1.0, rate=8e-3, t0=50.0)
    for rnd in ("linear", "cosine", "sigmoid_logit(a=2)"):
        out.append(Config(f"{rnd} 500", 500, warm500, rnd))
    # larger steps: for the short budget, and whether 2000 steps gain from them too
    for lr in (0.01, 0.02, 0.04, 0.08):
        out.append(Config(f"cosine 500 lr {lr:g}", 500, warm500, "cosine", learning_rate=lr))
    out.append(Config("improved 500 lr 0.04", 500, schedules.improved_for(500), learning_rate=0.04))
    out.append(Config("improved lr 0.01", 2000, schedules.improved(), learning_rate=0.01))
    for lr in (0.01, 0.02, 0.04):
        out.append(Config(f"cosine lr {lr:g}", 2000, warm, "cosine", learning_rate=lr))
    return out


def run_all(models: List[str], paths: List[str], cache: str, eval_every: int,
            only: Optional[List[str]] = None, report_only: bool = False) -> Dict[str, List[dict]]:
    """Runs (or with ``report_only`` just collects from the cache) every configuration; records by label."""
    records: Dict[str, List[dict]] = {}
    cached = evaluate.load_cache(cache)

    def get(model, methods, **options):
        if not report_only:
            return evaluate.run(model, paths, methods, cache, progress=False, eval_every=eval_every, **options)
        keys, _, done = evaluate.plan(model, paths, methods, cache, records=cached, **options)
        return [done[k] for k in keys if k in done]

    for name in models:
        model = zoo.load_model(name)
        records.setdefault("amortized", []).extend(get(model, ["amortized"]))
        for cfg in configs():
            if only and cfg.label not in only:
                continue
            recs = get(model, ["sga"], iterations=cfg.iterations, schedule=cfg.schedule,
                       rounding=None if cfg.rounding == "atanh" else cfg.rounding, three_class=cfg.three_class,
                       learning_rate=cfg.learning_rate)
            records.setdefault(cfg.label, []).extend(recs)
    return records


def center_crops(paths: List[str], size: int, folder: str) -> List[str]:
    """The central ``size`` x ``size`` crop of every image as ``<folder>/<stem>_c<size>.png`` (for screening)."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    out = []
    for path in paths:
        crop = os.path.join(folder, f"{os.path.splitext(os.path.basename(path))[0]}_c{size}.png")
        if not os.path.exists(crop):
            with Image.open(path) as im:
                w, h = im.size
                if min(w, h) < size:
                    sys.exit(f"{path} is smaller than the crop {size}x{size}")
                left, top = (w - size) // 2, (h - size) // 2
                im.convert("RGB").crop((left, top, left + size, top + size)).save(crop)
        out.append(crop)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="hyperprior-mse-0.005,hyperprior-mse-0.02", help="comma-separated zoo models")
    p.add_argument("--images", default="../shared/data/kodak")
    p.add_argument("--count", type=int, default=6, help="first N images (sorted by name)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--only", help="comma-separated configuration labels to run (default all)")
    p.add_argument("--out", default="examples/results/iterations_study")
    p.add_argument("--names", help="comma-separated image names (without extension) to use instead of the first N")
    p.add_argument("--crop", type=int, default=0, metavar="N",
                   help="screening: code the central NxN crop of each image (written to <out>/crops)")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the cache's finished runs (runs nothing)")
    args = p.parse_args()
    if args.list:
        for c in configs():
            print(f"{c.label:24s} {c.iterations:5d} steps  {c.schedule.name:40s} rounding {c.rounding}"
                  f"{' (3-class)' if c.three_class else ''}  lr {c.learning_rate or 0.005:g}")
        return 0
    paths = list_images([args.images])
    if args.names:
        wanted = args.names.split(",")
        paths = [p for p in paths if os.path.splitext(os.path.basename(p))[0] in wanted]
    paths = paths[:args.count]
    if not paths:
        sys.exit(f"no images in {args.images}")
    os.makedirs(args.out, exist_ok=True)
    if args.crop:
        paths = center_crops(paths, args.crop, os.path.join(args.out, "crops"))
    models = args.models.split(",")
    records = run_all(models, paths, os.path.join(args.out, "cache.jsonl"), args.eval_every,
                      args.only.split(",") if args.only else None, args.report_only)
    # records carry the model's name (config.json), also when --models gave checkpoint folders
    report(records, [zoo.read_info(m)["name"] for m in models], paths, args)
    return 0


def _key(r: dict) -> tuple:
    return r["model"], r["image"]


def _rows(records: Dict[str, List[dict]], base: Dict[tuple, float], paper: Dict[tuple, float], model=None):
    """(label, steps, runs, final loss vs amortized %, vs paper % (paired runs), wins, s/step, exact)."""
    rows = []
    for label, recs in records.items():
        recs = [r for r in recs if model is None or r["model"] == model]
        if label == "amortized" or not recs:
            continue
        vs_paper = [r["loss"] / paper[_key(r)] - 1 for r in recs if _key(r) in paper]
        rows.append((label, recs[0]["iterations"], len(recs),
                     100 * np.mean([r["loss"] / base[_key(r)] - 1 for r in recs]),
                     100 * np.mean(vs_paper) if vs_paper else float("nan"), sum(v < 0 for v in vs_paper),
                     len(vs_paper), np.mean([r["seconds_per_iteration"] for r in recs]),
                     all(r["decoded_exactly"] for r in recs)))
    return rows


def _table(rows) -> List[str]:
    lines = ["| configuration | steps | runs | final loss vs amortized | vs paper SGA (2000, same runs) "
             "| better than paper | s/step | decoded exactly |", "|---|---|---|---|---|---|---|---|"]
    for label, its, n, rel, vp, wins, pairs, spi, ok in rows:
        lines.append(f"| {label} | {its} | {n} | {rel:+.2f}% | {vp:+.3f}% | {wins}/{pairs} | {spi:.3f} | {ok} |")
    return lines


def _preset_labels() -> Dict[str, Optional[str]]:
    """Which study configuration each preset of :mod:`tfc_inference.presets` is."""
    from tfc_inference import presets
    out = {}
    for name, p in presets.PRESETS.items():
        out[name] = next((c.label for c in configs() if c.iterations == p.iterations
                          and c.schedule == p.schedule and c.rounding == p.rounding
                          and c.three_class == p.three_class
                          and (c.learning_rate or 0.005) == p.learning_rate), None)
    return out


def _rd_points(recs: List[dict], models: List[str], images: List[str]):
    """Per model (in lambda order) the mean bpp and PSNR over ``images`` (the paper's per-image average)."""
    bpp, psnr = [], []
    for m in models:
        sel = [r for r in recs if r["model"] == m and r["image"] in images]
        bpp.append(np.mean([r["bpp"] for r in sel]))
        psnr.append(np.mean([r["psnr"] for r in sel]))
    return bpp, psnr


def choose_presets(records: Dict[str, List[dict]], models: List[str], paths: List[str], paper: Dict[tuple, float]):
    """Lines on the choice of ``best`` and ``fast``: the lowest mean final loss relative to paper SGA among the
    configurations run on every image at every model, per step budget, next to the presets' configurations."""
    complete = len(models) * len(paths)
    scored = {}
    for label, recs in records.items():
        pairs = [r["loss"] / paper[_key(r)] - 1 for r in recs if _key(r) in paper]
        if label != "amortized" and len(recs) == complete and len(pairs) == complete:
            scored[label] = (recs[0]["iterations"], 100 * float(np.mean(pairs)))
    presets_of = _preset_labels()
    lines = ["## Presets", "",
             f"Ranked by the mean final true R-D loss relative to paper SGA over the {complete} runs "
             f"({len(paths)} images x {len(models)} models); only configurations with all {complete} runs rank.", ""]
    if len(records.get("paper", [])) < complete:
        lines.append(f"Paper SGA has {len(records.get('paper', []))}/{complete} runs so far: no ranking yet.")
        return lines
    for budget, preset in ((2000, "best"), (500, "fast")):
        ranked = sorted((v, lab) for lab, (its, v) in scored.items() if (its == budget if budget == 2000
                                                                          else its <= budget))
        chosen = presets_of.get(preset)
        text = ", ".join(f"{lab} {v:+.3f}%" for v, lab in ranked) or "none complete yet"
        lines.append(f"* `{preset}` (preset = `{chosen}`): candidates with "
                     f"{'2000' if budget == 2000 else '<= 500'} steps, best first: {text}.")
        if ranked and chosen in scored:
            v = scored[chosen][1]
            if ranked[0][1] != chosen:
                lines.append(f"  **The measured best is `{ranked[0][1]}`, not the preset's `{chosen}`.**")
            if preset == "best":
                lines.append(f"  `best` vs paper SGA: {v:+.3f}% ({'beats' if v < 0 else 'does not beat'} it).")
            else:
                verdict = "within" if v <= 0.5 else f"misses by {v - 0.5:.2f} points"
                lines.append(f"  `fast` vs paper SGA at 2000 steps: {v:+.3f}% ({verdict} the 0.5% target; "
                             f"{'CLI default' if v <= 0.5 else 'so not the CLI default'}).")
        elif chosen not in scored:
            lines.append(f"  `{chosen}` has not run on every image and model yet.")
    return lines


def bd_rates(records: Dict[str, List[dict]], models: List[str], paths: List[str]) -> List[str]:
    """BD-rate of every complete configuration vs paper SGA and vs amortized, per-image-averaged R-D points of
    the models (2 models: linear interpolation between the two points)."""
    from tfc_inference import report as rd
    images = [os.path.basename(p) for p in paths]
    complete = len(models) * len(paths)
    full = {lab: recs for lab, recs in records.items() if len(recs) == complete}
    if len(models) < 2 or "amortized" not in full or "paper" not in full:
        return ["## BD-rates", "", "Needs every model's amortized and paper SGA runs on every image (not yet).", ""]
    pts = {lab: _rd_points(recs, models, images) for lab, recs in full.items()}
    lines = ["## BD-rates", "",
             f"Mean bpp / PSNR over the {len(images)} images per model ({', '.join(models)}), real file sizes; "
             f"BD-rate by `bjontegaard` (pchip; with {len(models)} rate points per curve it is "
             f"{'linear interpolation between them' if len(models) == 2 else 'a short curve'}), over the PSNR "
             "interval both curves cover.", "",
             "| configuration | " + " | ".join(f"{m} bpp / dB" for m in models) + " | BD-rate vs paper SGA "
             "| BD-rate vs amortized |", "|---|" + "---|" * (len(models) + 2)]
    for lab, (bpp, psnr) in pts.items():
        cells = " | ".join(f"{b:.4f} / {q:.2f}" for b, q in zip(bpp, psnr))
        vs = [rd.bd_rate(*pts[anchor], bpp, psnr, min_points=2) for anchor in ("paper", "amortized")]
        lines.append(f"| {lab} | {cells} | {vs[0]} | {vs[1]} |")
    return lines + [""]


def report(records: Dict[str, List[dict]], models: List[str], paths: List[str], args) -> None:
    base = {_key(r): r["loss"] for r in records["amortized"]}
    paper = {_key(r): r["loss"] for r in records.get("paper", [])}
    fig, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20")
    for i, (label, recs) in enumerate((lab, recs) for lab, recs in records.items() if lab != "amortized" and recs):
        rel = np.array([[t["loss"] / base[_key(r)] - 1 for t in r["trace"]] for r in recs])
        steps = np.array([t["step"] for t in recs[0]["trace"]])
        seconds = steps * np.mean([r["seconds_per_iteration"] for r in recs])
        style = dict(color=colors(i % 20), linestyle="--" if recs[0]["iterations"] <= 500 else "-")
        ax_steps.plot(steps, 100 * rel.mean(0), label=f"{label} ({len(recs)} runs)", **style)
        ax_time.plot(seconds, 100 * rel.mean(0), label=label, **style)
    for ax, xl in ((ax_steps, "iteration"), (ax_time, "seconds (mean per image)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("true R-D loss vs amortized (%)")
        ax.grid(alpha=0.3)
    ax_steps.legend(fontsize=7)
    ax_steps.set_title(f"{', '.join(models)}; {len(paths)} images")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "loss_vs_steps.png"), dpi=120)
    machine = records["amortized"][0]["machine"]
    source = f"central {args.crop}x{args.crop} crops of " if args.crop else ""
    lines = ["# SGA rounding functions, schedules and step budgets", "",
             f"Models {', '.join(f'`{m}`' for m in models)}; {source}images "
             f"{', '.join(os.path.basename(p) for p in paths)} from `{args.images}`; every run really compresses "
             f"and decompresses; true R-D loss (file bits, decoded image) every {args.eval_every} steps. Machine: "
             f"{machine}; s/step is wall clock and depends on what else ran (see the notes below).",
             f"Regenerate from the cache: `python examples/iterations_study.py --models {args.models} "
             f"--images {args.images} --count {args.count}{f' --names {args.names}' if args.names else ''}"
             f"{f' --crop {args.crop}' if args.crop else ''} "
             f"--out {args.out} --report-only`.", "", "## All models", ""]
    lines += _table(_rows(records, base, paper))
    for m in (models if len(models) > 1 else []):
        lines += ["", f"## {m}", ""] + _table(_rows(records, base, paper, m))
    lines += ["", "![loss vs steps and seconds](loss_vs_steps.png)", ""]
    if not args.crop:
        lines += choose_presets(records, models, paths, paper) + [""] + bd_rates(records, models, paths)
    notes = os.path.join(args.out, "NOTES.md")
    if os.path.exists(notes):  # hand-written context (how the runs were made), kept across regenerations
        with open(notes) as f:
            lines += ["## Notes", "", f.read().strip(), ""]
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
