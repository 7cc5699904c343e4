"""Rounding functions, schedules and step budgets for SGA: true R-D loss vs steps and vs seconds.

For each zoo model and image, runs every configuration below (really compressing and decompressing), recording
the true R-D loss every ``--eval-every`` steps; results go to ``<out>/cache.jsonl`` (resumable, shared with the
evaluation runner's format) and a summary ``<out>/README.md`` with plots.

    python examples/iterations_study.py --images ../shared/data/kodak --count 6 \\
        --models hyperprior-mse-0.005,hyperprior-mse-0.02 --out examples/results/iterations_study
    python examples/iterations_study.py --list            # the configurations

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
                       rounding=None if cfg.rounding == "atanh" else cfg.rounding, three_class=cfg.three_class)
            records.setdefault(cfg.label, []).extend(recs)
    return records


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="hyperprior-mse-0.005,hyperprior-mse-0.02", help="comma-separated zoo models")
    p.add_argument("--images", default="../shared/data/kodak")
    p.add_argument("--count", type=int, default=6, help="first N images (sorted by name)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--only", help="comma-separated configuration labels to run (default all)")
    p.add_argument("--out", default="examples/results/iterations_study")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the cache's finished runs (runs nothing)")
    args = p.parse_args()
    if args.list:
        for c in configs():
            print(f"{c.label:24s} {c.iterations:5d} steps  {c.schedule.name:40s} rounding {c.rounding}"
                  f"{' (3-class)' if c.three_class else ''}")
        return 0
    paths = list_images([args.images])[:args.count]
    if not paths:
        sys.exit(f"no images in {args.images}")
    os.makedirs(args.out, exist_ok=True)
    models = args.models.split(",")
    records = run_all(models, paths, os.path.join(args.out, "cache.jsonl"), args.eval_every,
                      args.only.split(",") if args.only else None, args.report_only)
    report(records, models, paths, args)
    return 0


def report(records: Dict[str, List[dict]], models: List[str], paths: List[str], args) -> None:
    base = {(r["model"], r["image"]): r["loss"] for r in records["amortized"]}
    paper = {(r["model"], r["image"]): r["loss"] for r in records.get("paper", [])}
    fig, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    rows = []
    for label, recs in records.items():
        if label == "amortized" or not recs:
            continue
        rel = np.array([[t["loss"] / base[(r["model"], r["image"])] - 1 for t in r["trace"]] for r in recs])
        steps = np.array([t["step"] for t in recs[0]["trace"]])
        seconds = steps * np.mean([r["seconds_per_iteration"] for r in recs])
        ax_steps.plot(steps, 100 * rel.mean(0), label=label)
        ax_time.plot(seconds, 100 * rel.mean(0), label=label)
        vs_paper = [r["loss"] / paper[(r["model"], r["image"])] - 1 for r in recs if (r["model"], r["image"]) in paper]
        rows.append((label, recs[0]["iterations"], len(recs), 100 * rel[:, -1].mean(),
                     100 * np.mean(vs_paper) if vs_paper else float("nan"),
                     sum(v < 0 for v in vs_paper), np.mean([r["seconds_per_iteration"] for r in recs]),
                     all(r["decoded_exactly"] for r in recs)))
    for ax, xl in ((ax_steps, "iteration"), (ax_time, "seconds (mean per image)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("true R-D loss vs amortized (%)")
        ax.grid(alpha=0.3)
    ax_steps.legend(fontsize=7)
    ax_steps.set_title(f"{', '.join(models)}; {len(paths)} images")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "loss_vs_steps.png"), dpi=120)
    machine = records["amortized"][0]["machine"]
    lines = ["# SGA rounding functions, schedules and step budgets", "",
             f"Models {', '.join(f'`{m}`' for m in models)}; images {', '.join(os.path.basename(p) for p in paths)} "
             f"from `{args.images}`; true R-D loss every {args.eval_every} steps. Machine: {machine}.", "",
             "| configuration | steps | runs | final loss vs amortized | vs paper SGA (2000) | better than paper "
             "| s/step | decoded exactly |", "|---|---|---|---|---|---|---|---|"]
    for label, its, n, rel, vp, wins, spi, ok in rows:
        lines.append(f"| {label} | {its} | {n} | {rel:+.2f}% | {vp:+.2f}% | {wins}/{n} | {spi:.3f} | {ok} |")
    lines += ["", "![loss vs steps and seconds](loss_vs_steps.png)", ""]
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
