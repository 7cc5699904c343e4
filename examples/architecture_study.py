"""Which architecture trains best per CPU-hour on this machine: short runs at an equal CPU budget.

Each candidate (channel counts, crop, batch, learning rate) trains a lambda = 0.01 Base Hyperprior from scratch in bfloat16 until
its run has used ``--cpu-hours`` CPU-hours (all threads), coding ``--eval-images`` Kodak images every
``--eval-every`` steps (real files). The winner has the lowest rate-distortion loss bpp + lambda * MSE at the end of
the budget; the curves show whether the ranking was still changing. Runs live in ``runs/arch-<label>/`` (git-ignored;
a killed study resumes, and a finished run is not repeated); the report goes to
``examples/results/architecture_study/``.

    python examples/architecture_study.py --list
    python examples/architecture_study.py --cpu-hours 1.0        # ~30 min wall clock per candidate on 2 cores
    python examples/architecture_study.py --report-only
"""
import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LAMBDA = 0.01


@dataclasses.dataclass(frozen=True)
class Candidate:
    num_filters: int
    latent_channels: int
    crop: int
    batch_size: int
    learning_rate: Optional[float] = None  # None: the study's --learning-rate

    @property
    def label(self) -> str:
        lr = "" if self.learning_rate is None else f"-lr{self.learning_rate:g}"
        return f"n{self.num_filters}-m{self.latent_channels}-c{self.crop}-b{self.batch_size}{lr}"

    def arch(self) -> Dict[str, int]:
        return dict(num_filters=self.num_filters, latent_channels=self.latent_channels,
                    hyper_filters=self.num_filters, hyper_latent_channels=self.num_filters)


CANDIDATES = [  # in the order they run
    Candidate(64, 96, 256, 4),     # the zoo's architecture and crops
    # the same at larger Adam steps: early training is slow at 2e-4 (the zoo's base model reached only 27.5 dB on
    # Kodak after 16,000 steps)
    Candidate(64, 96, 256, 4, learning_rate=1e-3),
    Candidate(64, 96, 256, 4, learning_rate=5e-4),
    Candidate(64, 96, 128, 8),     # the same pixels per step in smaller crops
    Candidate(96, 144, 256, 4),    # wider
    Candidate(128, 192, 256, 4),   # the paper's N / M for MSE at low rates
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=[str(REPO.parent / "shared/data/train/wikipedia_photos"),
                                                  str(REPO.parent / "shared/data/train/bsds500/train")])
    p.add_argument("--kodak", default=str(REPO.parent / "shared/data/kodak"))
    p.add_argument("--cpu-hours", type=float, default=1.0, help="CPU budget of each candidate")
    p.add_argument("--eval-images", type=int, default=6)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--only", help="comma-separated candidate labels")
    p.add_argument("--work-dir", default=str(REPO / "runs"))
    p.add_argument("--out", default=str(REPO / "examples/results/architecture_study"))
    p.add_argument("--list", action="store_true")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    candidates = [c for c in CANDIDATES if not args.only or c.label in args.only.split(",")]
    if args.list:
        for c in candidates:
            curve = _curve(args, c)
            state = f"{curve[-1]['cpu_hours']:.2f} CPU-h, step {curve[-1]['step']}" if curve else "not started"
            print(f"{c.label:22s} {state}")
        return 0
    if not args.report_only:
        from tfc_inference.errors import TrainingDivergedError
        from tfc_inference.train import TrainOptions, train
        for c in candidates:
            if _diverged(args, c):
                print(f"== {c.label}: diverged earlier, skipped", flush=True)
                continue
            print(f"== {c.label}: {args.cpu_hours:g} CPU-hours", flush=True)
            try:
                train(TrainOptions(name=f"arch-{c.label}", data=args.data, steps=10_000_000, lmbda=LAMBDA,
                                   batch_size=c.batch_size, crop=c.crop,
                                   learning_rate=c.learning_rate or args.learning_rate,
                                   lr_drop_fraction=0.0, work_dir=args.work_dir,
                                   output=os.path.join(args.work_dir, "arch_export"), resume=True,
                                   precision="mixed_bfloat16", eval_dir=args.kodak, eval_images=args.eval_images,
                                   eval_every=args.eval_every, max_cpu_hours=args.cpu_hours, progress=False,
                                   log_every=100, save_every=180.0, **c.arch()))
            except TrainingDivergedError as e:  # a finding of the study (too large a step), not a failure of it
                print(f"== {c.label}: {e}", flush=True)
                with open(Path(args.work_dir) / f"arch-{c.label}" / "diverged.json", "w") as f:
                    json.dump({"step": e.step, "message": str(e)}, f)
    report(args, candidates)
    return 0


def _curve(args, c: Candidate) -> List[dict]:
    from tfc_inference.train import read_eval_curve
    return read_eval_curve(Path(args.work_dir) / f"arch-{c.label}" / "eval_curve.jsonl")


def _diverged(args, c: Candidate) -> Optional[dict]:
    path = Path(args.work_dir) / f"arch-{c.label}" / "diverged.json"
    return json.loads(path.read_text()) if path.exists() else None


def report(args, candidates: List[Candidate]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tfc_inference.evaluate import machine_description
    from tfc_inference.train import curve_point_loss
    os.makedirs(args.out, exist_ok=True)
    rows, fig = [], plt.figure(figsize=(7, 4.5))
    for c in candidates:
        curve = _curve(args, c)
        if not curve:
            continue
        loss = [curve_point_loss(pt, LAMBDA) for pt in curve]
        plt.plot([pt["cpu_hours"] for pt in curve], loss, marker=".", label=c.label)
        last = curve[-1]
        hours = max(last["cpu_hours"], 1e-9)
        # ranked by the mean of the last 3 evaluations: single points scatter by ~0.5 dB as the weights move
        rows.append((sum(loss[-3:]) / len(loss[-3:]), c, last, hours / max(last["step"], 1) * 3600.0, loss[-1]))
        with open(os.path.join(args.out, f"{c.label}.jsonl"), "w") as f:  # the curve, kept with the report
            f.writelines(json.dumps(pt) + "\n" for pt in curve)
    plt.xlabel("CPU-hours (2-core machine, all threads)")
    plt.ylabel(f"Kodak ({args.eval_images} images) bpp + {LAMBDA:g} MSE (from mean PSNR)")
    plt.grid(alpha=0.3)
    plt.legend(fontsize=8)
    plt.tight_layout()
    plt.savefig(os.path.join(args.out, "loss_vs_cpu_hours.png"), dpi=120)
    rows.sort(key=lambda r: r[0])
    lines = ["# Architecture study: R-D per CPU-hour", "",
             f"Base Hyperprior, lambda {LAMBDA:g}, from scratch, bfloat16 convolutions, Adam lr "
             f"{args.learning_rate:g} unless the label says `-lr` (no drop), budget {args.cpu_hours:g} CPU-hours per candidate; amortized "
             f"coding (real files) of the first {args.eval_images} Kodak images every {args.eval_every} steps. "
             f"Machine: {machine_description()}. Loss = mean bpp + lambda * MSE, MSE taken from the mean PSNR.",
             f"Regenerate: `python examples/architecture_study.py --cpu-hours {args.cpu_hours:g} --report-only`.", "",
             "Ranked by the mean loss of the last 3 evaluations (single points scatter by ~0.5 dB as the weights move).",
             "", "| rank | candidate | steps | CPU-h | CPU-s/step | bpp | PSNR dB | loss | mean loss, last 3 evals |",
             "|---|---|---|---|---|---|---|---|---|"]
    diverged = {c.label: d for c in candidates for d in [_diverged(args, c)] if d}
    rows = ([r for r in rows if r[1].label not in diverged] + [r for r in rows if r[1].label in diverged])
    for i, (mean3, c, last, sec, loss) in enumerate(rows, 1):
        cells = (f"{last['step']} | {last['cpu_hours']:.2f} | {sec:.2f} | {last['bpp']:.4f} | {last['psnr']:.2f} "
                 f"| {loss:.4f} | {mean3:.4f} |")
        if c.label in diverged:  # its last good point, then the divergence below
            lines.append(f"| - | {c.label} (before diverging) | {cells}")
        else:
            lines.append(f"| {i} | {c.label} | {cells}")
    for label, d in diverged.items():
        lines.append(f"| - | {label} | diverged (NaN loss) at step {d['step']} | | | | | | |")
    unfinished = [c.label for c in candidates if c.label not in diverged and (
        c not in [r[1] for r in rows] or _curve(args, c)[-1]["cpu_hours"] < 0.99 * args.cpu_hours)]
    if unfinished:
        lines += ["", f"Not at the budget yet: {', '.join(unfinished)}."]
    lines += ["", "![loss vs CPU-hours](loss_vs_cpu_hours.png)", ""]
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run saved a checkpoint; rerunning resumes it
        sys.exit("interrupted: progress is saved, run the same command again to resume")
