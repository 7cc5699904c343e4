"""Training a codec on a folder of photos, resumable across killed runs.

A run lives in a work folder (git-ignored, e.g. ``runs/<name>/``) holding TF checkpoints of model, optimizer and
step (``ckpt/``), TensorBoard logs (``logs/``) and ``run.json`` (the options).  Checkpoints are written every
``save_every`` seconds and at the end; ``--resume`` restores the newest one and continues at its step with the
same data order (batches depend only on (seed, step)).  When the run ends, the weights alone are exported to
``<output>/<name>/`` as a zoo checkpoint.

Objective: minimize E[bpp + lambda * MSE] (MSE on 0..255) with Adam; the learning rate drops by 10x for the last
``lr_drop_fraction`` of the steps.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from tfc_inference.errors import RunInUseError, TrainingDivergedError, TrainingError

#: Log-variance q(z|y) starts with when a bits-back model is initialized from a hyperprior: log(1/12), the variance
#: of the uniform noise U(-1/2, 1/2) on z that the hyperprior's h_s was trained with, so h_s sees perturbations of
#: the size it knows while q already has positive entropy (0.25 bits per element).  The earlier start, e^-4
#: (sigma 0.14), barely moved in a short fine-tune: Adam moves a bias by about one learning rate per step, 0.2-0.3
#: in 2,000-3,000 steps at 1e-4, and the measured q stayed at sigma ~0.22 (examples/results/bits_back_ablation).
Q_INIT_LOG_VARIANCE = float(np.log(1.0 / 12.0))


@dataclasses.dataclass
class TrainOptions:
    name: str
    data: Sequence[str]
    steps: int = 100_000
    lmbda: float = 0.01
    kind: str = "hyperprior"
    num_filters: int = 128
    latent_channels: int = 192
    hyper_filters: int = 128
    hyper_latent_channels: int = 128
    batch_size: int = 8
    crop: int = 256
    learning_rate: float = 1e-4
    lr_drop_fraction: float = 0.1
    seed: int = 0
    work_dir: str = "runs"
    output: str = "checkpoints"
    save_every: float = 300.0
    log_every: int = 100
    resume: bool = False
    init_from: Optional[str] = None
    min_variance: float = 0.0
    #: "float32", or "mixed_bfloat16": convolutions in bfloat16 with float32 weights (GDN, entropy models and the
    #: loss in float32); the exported model is float32 either way.
    precision: str = "float32"
    eval_dir: Optional[str] = None
    eval_images: int = 6
    #: every this many steps (and at the start and end of a run) code the ``eval_images`` images of ``eval_dir``
    #: amortized and append the point to ``<work_dir>/<name>/eval_curve.jsonl`` (the PSNR-vs-steps curve)
    eval_every: int = 0
    #: with ``init_from`` and no run to resume: the step count the weights already have (a continuation of an
    #: exported model whose run state is gone; the optimizer state starts fresh)
    initial_step: int = 0
    #: stop (checkpoint and export) once the run's CPU time (all threads, summed over resumes) reaches this many
    #: hours, even before ``steps`` (0: no limit); for equal-budget comparisons
    max_cpu_hours: float = 0.0
    #: stop (checkpoint and export) at this step although the schedule (learning-rate drop) is laid out for
    #: ``steps`` (0: at ``steps``): cuts a long run into chunks that each end with exported weights
    stop_at: int = 0
    progress: bool = True


def transfer_weights(source, target) -> List[str]:
    """Copies ``source``'s weights into ``target`` wherever the two line up; returns notes on partial copies.

    Used by ``--init-from``: fine-tuning to another lambda (same architecture: everything copied) or starting
    a bits-back model from a base one, whose hyper-analysis output is doubled (the mean half is copied, the
    log-variance half starts at a small variance) and whose p(z) drops the uniform convolution (its deep
    factorized parameters are copied).
    """
    import tensorflow as tf
    notes = []
    pairs = [(source.analysis_transform, target.analysis_transform),
             (source.synthesis_transform, target.synthesis_transform),
             (source.hyper_analysis_transform, target.hyper_analysis_transform),
             (source.hyper_synthesis_transform, target.hyper_synthesis_transform),
             (source.hyperprior, target.hyperprior)]
    for src_mod, dst_mod in pairs:
        src_vars = list(src_mod.trainable_variables)
        dst_vars = list(dst_mod.trainable_variables)
        if len(src_vars) != len(dst_vars):
            raise TrainingError(f"cannot initialize {dst_mod.name}: {len(src_vars)} vs {len(dst_vars)} variables")
        for s, d in zip(src_vars, dst_vars):
            if s.shape == d.shape:
                d.assign(s)
            elif s.shape[:-1] == d.shape[:-1] and d.shape[-1] == 2 * s.shape[-1]:
                # doubled output (mean, log variance): copy the mean half, start q at Q_INIT_LOG_VARIANCE
                n = s.shape[-1]
                is_bias = len(d.shape) == 1
                rest = tf.fill([n], Q_INIT_LOG_VARIANCE) if is_bias else tf.zeros(d.shape[:-1] + [n])
                d.assign(tf.concat([s, rest], axis=-1))
                notes.append(f"{d.name}: copied mean half of {list(s.shape)} into {list(d.shape)}")
            else:
                raise TrainingError(f"cannot initialize {d.name} {list(d.shape)} from {s.name} {list(s.shape)}")
    return notes


class EvalCurve:
    """The PSNR-vs-steps curve of a run: amortized coding of a few evaluation images (real files) at chosen
    steps, one JSON line per point in ``path`` (append-only, so a resumed run continues the curve)."""

    def __init__(self, path: Path, config, opts: "TrainOptions"):
        from tfc_inference.data import list_images
        self.path = path
        self.paths = list_images([opts.eval_dir])[:opts.eval_images]
        if not self.paths:
            raise TrainingError(f"no images in --eval-dir {opts.eval_dir}")
        self.config = config
        self.mixed = opts.precision != "float32"
        self._float32 = None
        self.points: List[Dict[str, Any]] = []  # added by this process

    def add(self, model, step: int, cpu_seconds: float) -> Dict[str, Any]:
        if self.mixed:  # evaluate the float32 model that the run would export
            if self._float32 is None:
                from tfc_inference.models import build_model
                self._float32 = build_model(self.config)
            self._float32.set_weights(model.get_weights())
            model = self._float32
        model.prepare_coders()  # tables from the current weights
        point = dict(step=int(step), cpu_hours=round(cpu_seconds / 3600.0, 4),
                     **evaluate_amortized(model, self.paths))
        with open(self.path, "a") as f:
            f.write(json.dumps(point) + "\n")
        self.points.append(point)
        return point


def read_eval_curve(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """The points of an ``eval_curve.jsonl`` by step (a torn last line is skipped; a step repeated after a
    resume keeps its last point). A point at step s written after points beyond s means the run resumed from an
    earlier checkpoint than those points' weights (a kill between checkpoints): they are dropped, as that
    progress was lost."""
    points: Dict[int, Dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    point = json.loads(line)
                except ValueError:
                    continue
                step = int(point["step"])
                for lost in [k for k in points if k > step]:
                    del points[lost]
                points[step] = point
    return [points[k] for k in sorted(points)]


def curve_point_loss(point: Dict[str, Any], lmbda: float) -> float:
    """The R-D loss bpp + lambda * MSE of an eval-curve point, its MSE taken from the point's mean PSNR."""
    return point["bpp"] + lmbda * 255.0 ** 2 / 10 ** (point["psnr"] / 10)


def evaluate_amortized(model, paths: Sequence[str]) -> Dict[str, float]:
    """Real amortized coding of ``paths``: mean file bpp, estimated bpp, PSNR (the paper's per-image mean)."""
    from tfc_inference import codec
    from tfc_inference.data import read_image
    rows = []
    for p in paths:
        x = read_image(p)
        result = codec.compress(model, x, method="amortized")
        rows.append((result.bpp, result.estimated_bpp, result.psnr))
    rows = np.array(rows)
    return {"images": [os.path.basename(p) for p in paths], "bpp": float(rows[:, 0].mean()),
            "estimated_bpp": float(rows[:, 1].mean()), "psnr": float(rows[:, 2].mean())}


@contextlib.contextmanager
def run_lock(work: Path):
    """Holds an exclusive lock on the run folder ``work`` (``<work>/lock``, with the holder's pid) while it
    trains; raises :class:`RunInUseError` at once if another process holds it.  The OS drops the lock when the
    process ends, however it ends, so a killed run never leaves a stale lock."""
    import fcntl
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunInUseError(f"{work} is being trained by another process (pid {holder}); wait for it to "
                                f"finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def train(opts: TrainOptions) -> Path:
    """Runs (or resumes) training and exports the final weights; returns the exported checkpoint folder.

    Raises :class:`RunInUseError` if another process is training the same run (``work_dir/name``)."""
    with run_lock(Path(opts.work_dir) / opts.name):
        return _train(opts)


def _train(opts: TrainOptions) -> Path:
    import tensorflow as tf
    from tqdm import tqdm
    from tfc_inference import zoo
    from tfc_inference.data import CropSampler, list_images
    from tfc_inference.models import ModelConfig, build_model

    if opts.stop_at < 0:
        raise TrainingError(f"--stop-at must be 0 (off) or a step number, got {opts.stop_at}")
    work = Path(opts.work_dir) / opts.name
    ckpt_dir = work / "ckpt"
    has_ckpt = tf.train.latest_checkpoint(str(ckpt_dir)) is not None
    if has_ckpt and not opts.resume:
        raise TrainingError(f"{work} already holds a run; pass --resume to continue it or choose another --name")
    if opts.resume and not has_ckpt:
        print(f"no checkpoint in {ckpt_dir}: starting a new run")
    work.mkdir(parents=True, exist_ok=True)

    config = ModelConfig(kind=opts.kind, num_filters=opts.num_filters, latent_channels=opts.latent_channels,
                         hyper_filters=opts.hyper_filters, hyper_latent_channels=opts.hyper_latent_channels,
                         lmbda=opts.lmbda, min_variance=opts.min_variance)
    paths = list_images(opts.data)
    sampler = CropSampler(paths, opts.crop, opts.batch_size, seed=opts.seed, progress=opts.progress)
    tf.keras.utils.set_random_seed(opts.seed)  # Python, numpy and TF: the initial weights follow --seed
    if opts.precision not in ("float32", "mixed_bfloat16"):
        raise TrainingError(f"unknown precision {opts.precision!r}; expected float32 or mixed_bfloat16")
    model = build_model(config, None if opts.precision == "float32" else opts.precision)
    drop_at = int(opts.steps * (1.0 - opts.lr_drop_fraction))
    schedule = tf.keras.optimizers.schedules.PiecewiseConstantDecay(
        [drop_at], [opts.learning_rate, opts.learning_rate * 0.1])
    optimizer = tf.keras.optimizers.Adam(schedule)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    cpu_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="cpu_seconds")
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, cpu_seconds=cpu_seconds)
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir), max_to_keep=2)

    init_notes: List[str] = []
    continued_from: Dict[str, Any] = {}
    if has_ckpt and opts.resume:
        try:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as e:
            raise TrainingError(f"checkpoint in {ckpt_dir} does not match the options (architecture "
                                f"changed?): {str(e).splitlines()[0]}") from None
        bad = [v.name for v in model.variables if not np.all(np.isfinite(v.numpy()))]
        if bad:
            raise TrainingDivergedError(f"checkpoint in {ckpt_dir} (step {int(step.numpy())}) holds non-finite "
                                        f"weights ({bad[0]}, {len(bad)} variables in all); the run diverged",
                                        int(step.numpy()))
        print(f"resumed {work} at step {int(step.numpy())}")
    elif opts.init_from:
        source = zoo.load_model(opts.init_from, prepare_coders=False)
        init_notes = transfer_weights(source, model)
        print(f"initialized from {opts.init_from}" + "".join(f"\n  {n}" for n in init_notes))
        if opts.initial_step:
            if not 0 < opts.initial_step < opts.steps:
                raise TrainingError(f"--initial-step must be between 0 and --steps ({opts.steps}), "
                                    f"got {opts.initial_step}")
            step.assign(opts.initial_step)
            print(f"continuing at step {opts.initial_step} (fresh optimizer state)")
            source_training = zoo.read_info(opts.init_from).get("training", {})
            if source_training.get("steps") == opts.initial_step:  # continuing that export: carry its history
                cpu_seconds.assign(3600.0 * float(source_training.get("cpu_hours", 0.0)))
                continued_from = {"init_from": source_training.get("init_from"),
                                  "continued_from": f"{opts.init_from} (step {opts.initial_step})"}
    elif opts.initial_step:
        raise TrainingError("--initial-step continues the weights of --init-from; give --init-from too")
    run_info = dataclasses.asdict(opts)
    run_info.update(num_training_images=len(sampler.images), init_notes=init_notes, **continued_from)
    if has_ckpt and opts.resume:  # where the run's weights started is the first invocation's to say
        try:
            with open(work / "run.json") as f:
                first = json.load(f)
            run_info.update({k: first[k] for k in ("init_from", "initial_step", "init_notes", "continued_from")
                             if k in first})
        except (OSError, ValueError):
            pass
    with open(work / "run.json", "w") as f:
        json.dump(run_info, f, indent=2, default=str)

    end = min(opts.stop_at, opts.steps) if opts.stop_at else opts.steps  # this invocation's last step
    variables = model.trainable_variables
    optimizer.build(variables)  # create Adam's slots now, so train_step is traced once

    @tf.function(input_signature=[tf.TensorSpec([opts.batch_size, opts.crop, opts.crop, 3], tf.uint8)])
    def train_step(batch):
        x = tf.cast(batch, tf.float32)
        noise_seed = tf.stack([tf.constant(opts.seed, tf.int64), step])  # noise of step s depends on (seed, s) only
        with tf.GradientTape() as tape:
            terms = model(x, training=True, noise_seed=noise_seed)
        grads = tape.gradient(terms["loss"], variables)
        optimizer.apply_gradients(zip(grads, variables))
        return terms

    writer = tf.summary.create_file_writer(str(work / "logs"))
    start = int(step.numpy())
    last_save = time.time()
    t_cpu0 = time.process_time()
    cpu_base = float(cpu_seconds.numpy())
    running: Dict[str, float] = {}
    bar = tqdm(total=end, initial=start, desc=opts.name, unit="step", disable=not opts.progress,
               dynamic_ncols=True, smoothing=0.05)

    def save():
        cpu_seconds.assign(cpu_base + time.process_time() - t_cpu0)
        manager.save(checkpoint_number=int(step.numpy()))

    # A polite kill (SIGTERM, e.g. the end of a session) saves a checkpoint before exiting.
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        def on_sigterm(signum, frame):
            raise KeyboardInterrupt("SIGTERM")
        previous_handler = signal.signal(signal.SIGTERM, on_sigterm)

    curve = EvalCurve(work / "eval_curve.jsonl", config, opts) if opts.eval_dir and opts.eval_every else None
    known = {p["step"] for p in read_eval_curve(curve.path)} if curve is not None else set()
    # a point at the start also marks any later points (of progress lost since the checkpoint) as stale
    if curve is not None and start < end and (start not in known or any(k > start for k in known)):
        curve.add(model, start, cpu_base)
    if opts.max_cpu_hours > 0 and cpu_base >= 3600.0 * opts.max_cpu_hours:
        print(f"CPU budget of {opts.max_cpu_hours:g} h already used at step {start}", flush=True)
        start = end  # nothing left to train: export as is
    diverged = False
    try:
        for batch in sampler.dataset(start, end):
            terms = train_step(batch)
            loss = float(terms["loss"])
            if not math.isfinite(loss):  # nothing after the last checkpoint is saved; the one before it is kept too
                diverged = True
                raise TrainingDivergedError(
                    f"training diverged: loss {loss} at step {int(step.numpy()) + 1}; nothing after the last "
                    f"checkpoint in {ckpt_dir} was saved; resume with a lower --learning-rate",
                    int(step.numpy()) + 1)
            step.assign_add(1)
            s = int(step.numpy())
            for k, v in terms.items():
                running[k] = running.get(k, float(v)) * 0.98 + 0.02 * float(v)
            bar.update(1)
            if s % opts.log_every == 0 or s == end:
                bar.set_postfix(loss=f"{running['loss']:.3f}", bpp=f"{running['bpp']:.3f}",
                                psnr=f"{running['psnr']:.2f}")
                with writer.as_default(step=s):
                    for k, v in terms.items():
                        tf.summary.scalar(k, v)
                    tf.summary.scalar("learning_rate", schedule(s))
                if not opts.progress:
                    print(f"step {s} loss {running['loss']:.4f} bpp {running['bpp']:.4f} psnr {running['psnr']:.2f}",
                          flush=True)
            used = cpu_base + time.process_time() - t_cpu0
            out_of_budget = opts.max_cpu_hours > 0 and used >= 3600.0 * opts.max_cpu_hours
            if curve is not None and (s % opts.eval_every == 0 or s == end or out_of_budget):
                curve.add(model, s, used)
            if out_of_budget:
                print(f"CPU budget of {opts.max_cpu_hours:g} h reached at step {s}", flush=True)
                break
            if time.time() - last_save > opts.save_every:
                save()
                last_save = time.time()
    finally:
        bar.close()
        if int(step.numpy()) > start and not diverged:
            save()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)

    if opts.precision != "float32":  # export (and evaluate) the float32 model with the trained weights
        trained, model = model, build_model(config)
        model.set_weights(trained.get_weights())
    evaluation = {}
    if opts.eval_dir:
        eval_paths = list_images([opts.eval_dir])[:opts.eval_images]
        model.prepare_coders()
        last = curve.points[-1] if curve is not None and curve.points else None
        if last is not None and last["step"] == int(step.numpy()):  # the curve just coded these weights
            evaluation = {k: last[k] for k in ("images", "bpp", "estimated_bpp", "psnr")}
        else:
            evaluation = evaluate_amortized(model, eval_paths)
        evaluation["dataset"] = str(opts.eval_dir)
        print(f"amortized on {len(eval_paths)} images of {opts.eval_dir}: "
              f"{evaluation['bpp']:.4f} bpp, {evaluation['psnr']:.2f} dB")
    training = {k: run_info[k] for k in ("steps", "lmbda", "batch_size", "crop", "learning_rate",
                                         "lr_drop_fraction", "seed", "init_from", "num_training_images")}
    training["steps"] = int(step.numpy())  # fewer than --steps if the CPU budget ended the run
    if opts.max_cpu_hours:
        training["max_cpu_hours"] = opts.max_cpu_hours
    training["data"] = [str(d) for d in opts.data]
    training["cpu_hours"] = round(float(cpu_seconds.numpy()) / 3600.0, 3)
    training["run"] = str(work)  # which run (folder) these weights came from
    if run_info.get("continued_from"):
        training["continued_from"] = run_info["continued_from"]
    out = zoo.save_checkpoint(model, Path(opts.output) / opts.name, training=training, evaluation=evaluation)
    print(f"exported {out}")
    return out
