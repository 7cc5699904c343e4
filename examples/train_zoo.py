"""Runs or resumes the plan that trains the model zoo shipped in ``checkpoints/``.

The plan is a list of stages; each trains one model up to a step count (``tfc-inference train`` with ``--resume``),
evaluates it amortized on Kodak (real files) and exports weights + ``config.json`` to ``checkpoints/<name>``
(phase 1) or ``checkpoints/phase<N>/<name>`` (later phases, until ``--promote``).
In-progress state lives in the git-ignored ``runs/<name>/ckpt`` (saved every few minutes and on SIGTERM), so a
killed stage resumes at its last saved step; a stage whose exported checkpoint already has its step count is
skipped. A stage is one chunk: commit its exported weights when it ends, and at most one chunk can be lost.

Phases raise the step counts of the same models (later phases resume the runs of earlier ones):

    python examples/train_zoo.py --data ../shared/data/train --phase 1     # quick zoo, ~1.5 h on 2 cores
    python examples/train_zoo.py --data ../shared/data/train --phase 2     # longer training, many CPU-hours
    python examples/train_zoo.py --phase 2 --chunk-steps 10000 --repeat    # the same in chunks that export
    python examples/train_zoo.py --phase 2 --promote                       # finished: replace the shipped models
    python examples/train_zoo.py --phase 2 --report                        # training curves -> checkpoints/
    python examples/train_zoo.py --list                                    # what is done and what remains
    python examples/train_zoo.py --paper-config                            # the paper's GPU-scale settings

Base hyperpriors other than lambda 0.01 start from ``hyperprior-mse-0.01`` (``--init-from``); each bits-back model
starts from the base model of its lambda. Phase 2 trains ``hyperprior-mse-0.01`` on (16k -> 60k steps) and then
starts every other model anew from its phase-2 source (runs in ``<work-dir>/phase2/``); a stage waits until its
source has finished the phase.
"""
import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Architecture chosen for CPU training (see checkpoints/README.md); the paper uses 192 / 192 (M3) on a GPU.
ARCH = dict(num_filters=64, latent_channels=96, hyper_filters=64, hyper_latent_channels=64)
LAMBDAS = [0.0025, 0.005, 0.01, 0.02, 0.04]
BASE_LAMBDA = 0.01


@dataclasses.dataclass
class Stage:
    name: str
    kind: str
    lmbda: float
    steps: Dict[int, int]          # phase -> total steps reached at the end of that phase
    learning_rate: float
    init_from: Optional[str] = None
    #: phase -> (batch size, crop); phase 2 uses 8 x 128 px, which the architecture study found best per CPU-hour
    #: (examples/results/architecture_study/)
    batches: Dict[int, Tuple[int, int]] = dataclasses.field(default_factory=lambda: {1: (4, 256), 2: (8, 128)})
    #: from this phase on, the stage is a new run from ``init_from`` (in ``<work-dir>/phase<N>/``) instead of a
    #: continuation of the earlier phase's run
    restart_phase: Optional[int] = None

    def steps_for(self, phase: int) -> int:
        return max(s for p, s in self.steps.items() if p <= phase)

    def batch_for(self, phase: int) -> Tuple[int, int]:
        return self.batches[max(p for p in self.batches if p <= phase)]

    def work_dir(self, root: str, phase: int) -> Path:
        restarted = self.restart_phase is not None and phase >= self.restart_phase
        return Path(root) / f"phase{self.restart_phase}" if restarted else Path(root)


def _name(kind: str, lmbda: float) -> str:
    return f"{'hyperprior' if kind == 'hyperprior' else 'bitsback'}-mse-{lmbda:g}"


def plan() -> List[Stage]:
    """Stages in dependency order: the base model, its fine-tunes to the other lambdas, then bits-back models."""
    base = _name("hyperprior", BASE_LAMBDA)
    stages = [Stage(base, "hyperprior", BASE_LAMBDA, {1: 16_000, 2: 60_000}, 2e-4)]
    for lmbda in LAMBDAS:
        if lmbda != BASE_LAMBDA:
            stages.append(Stage(_name("hyperprior", lmbda), "hyperprior", lmbda, {1: 3_000, 2: 10_000}, 2e-4,
                                init_from=base, restart_phase=2))
    # Phase 2 starts every model but the base anew from its phase-2 source (the other lambdas from the base at
    # 60k steps, each bits-back model from the hyperprior of its lambda with q(z|y) at variance 1/12) instead of
    # continuing phase 1's runs: fine-tuning a well-trained base converges in a few thousand steps, and each
    # bits-back model pairs with the final Base Hyperprior of its lambda.
    for lmbda in LAMBDAS:
        stages.append(Stage(_name("bitsback", lmbda), "bitsback", lmbda, {1: 2_000 if lmbda != BASE_LAMBDA
                                                                          else 3_000, 2: 10_000}, 1e-4,
                            init_from=_name("hyperprior", lmbda), restart_phase=2))
    return stages


def export_dir(args) -> Path:
    """Phase 1 exported into ``--checkpoints``; later phases export into ``--checkpoints/phase<N>/`` (not
    listed by ``tfc-inference models``) until ``--promote`` puts the finished phase in place of the shipped models,
    so that committed chunks do not change the models every published result was measured with."""
    root = Path(args.checkpoints)
    return root if args.phase <= 1 else root / f"phase{args.phase}"


def find_export(name: str, args) -> Optional[Path]:
    """The newest export of ``name``: the phase's folder first, then the shipped models."""
    for d in dict.fromkeys([export_dir(args), Path(args.checkpoints)]):
        if (d / name / "config.json").exists():
            return d / name
    return None


def exported_steps(name: str, args, run: Optional[Path] = None) -> int:
    """Steps of the newest export of ``name``; with ``run``, 0 unless it came from that run folder."""
    folder = find_export(name, args)
    try:
        with open(folder / "config.json") as f:
            training = json.load(f).get("training", {})
    except (OSError, ValueError, TypeError):
        return 0
    if run is not None and Path(training.get("run", "")).resolve() != run.resolve():
        return 0
    return int(training.get("steps", 0))


def stage_done(stage: Stage, phase: int, args) -> int:
    """Steps the exported ``stage`` model already has towards ``phase`` (0 when the phase restarts the stage
    and its export is still the earlier run's)."""
    restarted = stage.restart_phase is not None and phase >= stage.restart_phase
    run = stage.work_dir(args.work_dir, phase) / stage.name if restarted else None
    return exported_steps(stage.name, args, run)


def promote(stages: List[Stage], args) -> int:
    """Puts the finished phase's models in place of the shipped ones (all stages must be done).  The shipped
    models move to ``checkpoints/phase<N-1>/`` first (loadable by path), so results measured with them stay
    reproducible; git stores the moved files as the same blobs, so the archive costs no repository space."""
    import shutil
    source = export_dir(args)
    archive = Path(args.checkpoints) / f"phase{args.phase - 1}"
    missing = [s.name for s in stages if stage_done(s, args.phase, args) < s.steps_for(args.phase)
               or not (source / s.name).exists()]
    if source == Path(args.checkpoints) or missing:
        print(f"cannot promote phase {args.phase}: not finished ({', '.join(missing) or 'phase 1 is in place'})",
              file=sys.stderr)
        return 1
    for s in stages:
        shipped = Path(args.checkpoints) / s.name
        if shipped.exists():
            if (archive / s.name).exists():
                shutil.rmtree(shipped)  # archived by an earlier, interrupted promote
            else:
                archive.mkdir(parents=True, exist_ok=True)
                shutil.move(str(shipped), str(archive / s.name))
                print(f"archived {shipped} -> {archive / s.name}")
        shutil.copytree(source / s.name, shipped)
        print(f"promoted {source / s.name} -> {shipped}")
    return 0


def _run_step(run: Path) -> int:
    """The step of a run's newest training checkpoint (0 if none)."""
    import re
    try:
        text = (run / "ckpt" / "checkpoint").read_text()
    except OSError:
        return 0
    m = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', text)
    return int(m.group(1)) if m else 0


def run_pass(stages: List[Stage], args) -> int:
    """One chunk (or the rest) of every stage that can train now; returns how many stages trained."""
    from tfc_inference.errors import RunInUseError
    from tfc_inference.train import TrainOptions, train
    trained = 0
    for stage in stages:
        target = stage.steps_for(args.phase)
        done = stage_done(stage, args.phase, args)
        if done >= target:
            continue
        work_dir = stage.work_dir(args.work_dir, args.phase)
        init_from, initial_step = stage.init_from, 0
        if done and not (work_dir / stage.name / "ckpt" / "checkpoint").exists():
            # exported earlier, run state gone (e.g. trained on another machine): continue the exported weights
            init_from, initial_step = str(find_export(stage.name, args)), done
        elif init_from and exported_steps(init_from, args) == 0:
            print(f"skipping {stage.name}: {init_from} is not trained yet", file=sys.stderr)
            continue
        elif init_from and stage.restart_phase and args.phase >= stage.restart_phase and not done:
            source = next((s for s in plan() if s.name == init_from), None)
            if source is not None and stage_done(source, args.phase, args) < source.steps_for(args.phase):
                print(f"skipping {stage.name}: {init_from} has not finished phase {args.phase} yet", file=sys.stderr)
                continue
        run_step = _run_step(work_dir / stage.name) or done
        stop_at = min(target, run_step + args.chunk_steps) if args.chunk_steps else 0
        print(f"== {stage.name}: training to step {target}" + (f", this chunk to {stop_at}" if stop_at else "")
              + (f" (continuing the exported weights at step {done})" if initial_step else ""), flush=True)
        batch_size, crop = stage.batch_for(args.phase)
        try:
            train(TrainOptions(name=stage.name, data=args.data, steps=target, lmbda=stage.lmbda, kind=stage.kind,
                               batch_size=batch_size, crop=crop, learning_rate=stage.learning_rate,
                               work_dir=str(work_dir), output=str(export_dir(args)), resume=True,
                               init_from=init_from, initial_step=initial_step, stop_at=stop_at,
                               precision=args.precision,
                               eval_dir=args.kodak, eval_images=24, eval_every=args.eval_every, progress=False,
                               log_every=500, save_every=180.0, **ARCH))
        except RunInUseError as e:  # another train_zoo process has this stage: leave it to that one
            print(f"skipping {stage.name}: {e}", file=sys.stderr)
            continue
        trained += 1
    return trained


def merged_curve(kept: List[dict], run: List[dict]) -> List[dict]:
    """The curve kept with the checkpoints, continued by the run's points (step > 0). A run that continued an
    export on another machine starts its CPU clock anew: its points are shifted onto the kept curve's clock at
    the step where the two meet."""
    run = [p for p in run if p["step"] > 0]
    if not run:
        return [p for p in kept if p["step"] > 0]
    first = run[0]["step"]
    at_join = next((p for p in kept if p["step"] == first), None)
    shift = max(0.0, at_join["cpu_hours"] - run[0]["cpu_hours"]) if at_join is not None else 0.0
    shifted = [dict(p, cpu_hours=round(p["cpu_hours"] + shift, 4)) for p in run]
    return [p for p in kept if 0 < p["step"] < first] + shifted


def curves_report(stages: List[Stage], args) -> int:
    """PSNR / loss vs training step of every stage of the phase (from ``runs/.../eval_curve.jsonl``), kept with
    the checkpoints: ``<checkpoints>/training_curves/`` (the points as JSON lines, a plot, a markdown table and,
    per model, the change of the R-D loss per doubling of the steps, fitted over the curve's second half)."""
    import math
    import numpy as np
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tfc_inference.train import curve_point_loss, read_eval_curve
    out = Path(args.checkpoints) / "training_curves"
    out.mkdir(parents=True, exist_ok=True)
    fig, (ax_psnr, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = []
    for stage in stages:
        curve = merged_curve(read_eval_curve(out / f"{stage.name}.jsonl"),
                             read_eval_curve(stage.work_dir(args.work_dir, args.phase) / stage.name
                                             / "eval_curve.jsonl"))
        if not curve:
            continue
        with open(out / f"{stage.name}.jsonl", "w") as f:
            f.writelines(json.dumps(p) + "\n" for p in curve)
        steps = np.array([p["step"] for p in curve], float)
        loss = np.array([curve_point_loss(p, stage.lmbda) for p in curve])
        ax_psnr.plot(steps, [p["psnr"] for p in curve], marker=".", label=stage.name)
        ax_loss.plot(steps, loss / loss[0], marker=".", label=stage.name)
        tail = steps >= steps[-1] / 2
        per_doubling = float("nan")
        if tail.sum() >= 3 and steps[tail][-1] > steps[tail][0]:
            slope = np.polyfit(np.log2(steps[tail]), loss[tail], 1)[0]
            per_doubling = 100.0 * slope / loss[-1]
        first, last = curve[0], curve[-1]
        rows.append(f"| {stage.name} | {first['step']:,} | {first['bpp']:.4f} / {first['psnr']:.2f} | {last['step']:,} "
                    f"| {last['bpp']:.4f} / {last['psnr']:.2f} | {last['cpu_hours']:.2f} | "
                    + ("-" if math.isnan(per_doubling) else f"{per_doubling:+.1f}%") + " |")
    for ax, label in ((ax_psnr, "Kodak PSNR dB (amortized, 24 images)"), (ax_loss, "R-D loss / loss at first point")):
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_loss.set_xscale("log", base=2)
    ax_psnr.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    from tfc_inference.evaluate import machine_description
    lines = [f"# Training curves, phase {args.phase}", "",
             f"Every model of `python examples/train_zoo.py --phase {args.phase}`, coded amortized on the 24 Kodak "
             f"images (real files) every {args.eval_every} steps while it trained. Machine: {machine_description()}. "
             f"Regenerate: `python examples/train_zoo.py --phase {args.phase} --report` (needs the runs' "
             f"`eval_curve.jsonl` or the points kept here as `<name>.jsonl`, which the runs' points continue).", "",
             "Loss change per doubling: slope of bpp + lambda MSE against log2(step), over the second half of the "
             "curve, relative to the last loss (negative: more training still helps).", "",
             "| model | first step | bpp / PSNR | last step | bpp / PSNR | CPU-h (this phase) | loss per doubling |",
             "|---|---:|---|---:|---|---:|---:|"] + rows + ["", "![curves](curves.png)", ""]
    (out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=[str(REPO.parent / "shared/data/train/wikipedia_photos"),
                                                  str(REPO.parent / "shared/data/train/bsds500/train")],
                   help="training image folders")
    p.add_argument("--kodak", default=str(REPO.parent / "shared/data/kodak"), help="Kodak folder for evaluation")
    p.add_argument("--phase", type=int, default=1, help="train every stage up to this phase's step count")
    p.add_argument("--only", help="comma-separated model names to restrict the plan to")
    p.add_argument("--work-dir", default=str(REPO / "runs"), help="in-progress runs (git-ignored)")
    p.add_argument("--checkpoints", default=str(REPO / "checkpoints"),
                   help="the shipped models; phase 1 exports here, later phases into its phase<N>/ sub-folder")
    p.add_argument("--precision", default="mixed_bfloat16", choices=("float32", "mixed_bfloat16"),
                   help="training precision (phase 1 ran in float32; bfloat16 convolutions step ~1.3-1.5x faster)")
    p.add_argument("--eval-every", type=int, default=2000,
                   help="steps between Kodak evaluations (the PSNR-vs-steps curves, runs/<name>/eval_curve.jsonl)")
    p.add_argument("--chunk-steps", type=int, default=0, metavar="N",
                   help="train each stage at most N steps per invocation and export at the chunk's end (the "
                        "schedule stays laid out for the phase's step count); commit the exported weights, rerun")
    p.add_argument("--repeat", action="store_true",
                   help="with --chunk-steps: keep making passes over the plan until nothing is left to train")
    p.add_argument("--promote", action="store_true",
                   help="copy the finished phase's models (checkpoints/phase<N>/) over the shipped ones")
    p.add_argument("--report", action="store_true",
                   help="write the phase's training curves (PSNR and loss vs step) to checkpoints/training_curves/")
    p.add_argument("--list", action="store_true", help="print the plan and its state, train nothing")
    p.add_argument("--paper-config", action="store_true", help="print the paper's GPU-scale training settings")
    args = p.parse_args()

    if args.paper_config:
        print("Paper scale (GPU), per lambda in {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08}:\n"
              "  tfc-inference train --name hyperprior-mse-<lambda> --lambda <lambda> --num-filters 192 "
              "--latent-channels 192 --hyper-filters 192 --hyper-latent-channels 192 --batch-size 8 --crop 256 "
              "--learning-rate 1e-4 --steps 2000000 --data <CLIC/ImageNet-size photo set>\n"
              "  (the paper's models: 192 filters, 192 latents below lambda 0.02 and 256 above, 1-3M steps)\n"
              "  bits-back: the same with --kind bitsback --init-from hyperprior-mse-<lambda>")
        return 0

    # --init-from names resolve to the phase's exports first, then to the shipped models
    os.environ["TFC_INFERENCE_CHECKPOINTS"] = os.pathsep.join(dict.fromkeys(
        [str(export_dir(args)), str(args.checkpoints)]))
    stages = plan()
    if args.only:
        wanted = set(args.only.split(","))
        stages = [s for s in stages if s.name in wanted]
    for stage in stages:
        target = stage.steps_for(args.phase)
        done = stage_done(stage, args.phase, args)
        state = "done" if done >= target else f"exported at {done}" if done else "to do"
        print(f"{stage.name:24s} {stage.kind:10s} lambda {stage.lmbda:<7g} steps {target:>7d}  {state}")
    if args.list:
        return 0
    if args.promote:
        return promote(stages, args)
    if args.report:
        return curves_report(stages, args)
    while run_pass(stages, args) and args.repeat:
        pass
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run saved a checkpoint; rerunning resumes it
        sys.exit("interrupted: progress is saved, run the same command again to resume")
