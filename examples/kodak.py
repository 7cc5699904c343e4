"""The paper's Kodak protocol, resumable: baselines, main curves, ablations, then the report.

    python examples/kodak.py --list                 # what is done, what remains, and an ETA from the cache
    python examples/kodak.py                        # run everything not yet in the caches, then write the report
    python examples/kodak.py --report-only          # just the report from the caches
    python examples/kodak.py --count 6 --report-only  # the report of the first 6 images (-> <out>/first-6-images/)

Stages (each skips every run already in its cache, so a killed run continues where it stopped):

1. baselines: JPEG, JPEG2000, WebP, AVIF, JPEG XL at a sweep of settings on every image -> ``baselines.jsonl``
2. amortized [M3] with every zoo model on every image -> ``cache.jsonl``
3. main curves: SGA [M1] with every hyperprior model, SGA+BB [M2] with every bits-back model, on every image,
   ``--iterations`` (the paper's 2000) -> ``cache.jsonl``
4. ablations on a subset (``--ablation-count`` images, ``--ablation-lambdas``): MAP, STE, uniform noise,
   deterministic annealing [A1-A4] with the hyperprior models, BB without SGA, BB amortized [A5, A6] with the
   bits-back models -> ``cache.jsonl``
5. the report (``tfc_inference.report``) -> ``--out``

A run with fewer ``--iterations`` than 2000 is recorded as its own curve (the report never mixes iteration counts).
``examples/tecnick.py`` runs the same protocol on Tecnick or on the unsplash1200 stand-in.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")

MAIN_METHODS = {"hyperprior": ["sga"], "bitsback": ["sga+bb"]}
ABLATION_METHODS = {"hyperprior": ["map", "ste", "uniform-noise", "deterministic-annealing"],
                    "bitsback": ["bb-no-sga", "bb-amortized"]}
ALL_METHODS = ["amortized", "sga", "sga+bb", "map", "ste", "uniform-noise", "deterministic-annealing", "bb-no-sga",
               "bb-amortized"]


def _iterative_options(args, stage: str) -> Dict[str, object]:
    """``--iterations``, or with ``--preset`` the preset's SGA settings for the main curves (sga, sga+bb)."""
    from tfc_inference import evaluate
    return evaluate.with_preset(args.preset if stage == "main" else None, iterations=args.iterations)


def parse_args(argv, dataset: str, images: str, ablation_count: int, published: Optional[str],
               ablation_lambdas: str = "all"):
    from tfc_inference.cli import _HelpFormatter  # shows defaults, except None
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + f" (dataset: {dataset})",
                                formatter_class=_HelpFormatter)
    p.add_argument("--images", default=images, help="folder of the test images")
    p.add_argument("--dataset", default=dataset, help="dataset label in the report")
    p.add_argument("--out", default=None, help="results folder (default: examples/results/<dataset>)")
    p.add_argument("--iterations", type=int, default=2000, help="iterations of the iterative methods")
    p.add_argument("--preset", choices=("paper", "best", "fast"),
                   help="main curves (sga, sga+bb) with a preset of tfc_inference.presets instead of --iterations "
                        "and the default schedule; recorded as their own curves")
    p.add_argument("--bbvi-iterations", type=int, default=2000, help="reproducible-BBVI steps of bits-back methods")
    p.add_argument("--count", type=int, default=None, help="use the first N images (default: all)")
    p.add_argument("--models", default=None, help="comma-separated zoo models (default: the zoo's hyperprior-mse-* and "
                                                  "bitsback-mse-* series)")
    p.add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated methods to run")
    p.add_argument("--ablation-count", type=int, default=ablation_count, help="images of the ablation subset")
    p.add_argument("--ablation-lambdas", default=ablation_lambdas,
                   help="model lambdas of the ablation subset, comma-separated, or 'all' (every zoo lambda: "
                        "curves of as many points as the main ones, so that they have BD-rates)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-baselines", action="store_true", help="do not run the classical codecs")
    p.add_argument("--published", default=published, choices=("kodak", "tecnick", "none"),
                   help="published curves in the report")
    p.add_argument("--list", "--dry-run", dest="list", action="store_true",
                   help="print what is done and what remains, with an ETA, and exit")
    p.add_argument("--report-only", action="store_true", help="only write the report from the caches")
    p.add_argument("--workers", type=int, default=1,
                   help="split the runs over N processes sharing the cache, each with cores/N TF threads (on this "
                        "2-core machine two 1-thread workers do ~1.3x the SGA steps per second of one)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "i/n": one worker's share (set by --workers)
    return p.parse_args(argv)


def run_workers(argv: Sequence[str], workers: int) -> int:
    """Runs this script again as ``workers`` processes, each on its share of the runs (``--worker i/n``) with
    cores/workers TF threads; returns 0 when all finished, else the first failing exit code."""
    import subprocess
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1")
    base = [sys.executable, os.path.abspath(sys.argv[0])] + [a for a in argv if a != "--list"]
    procs = [subprocess.Popen(base + ["--skip-baselines", "--worker", f"{i}/{workers}"], env=env)
             for i in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [c for c in codes if c]
    return failed[0] if failed else 0


def zoo_models(names: Optional[str]) -> List[Dict]:
    from tfc_inference import zoo
    models = {m["name"]: m for m in zoo.list_models()
              if (m.get("config") or {}).get("kind") in ("hyperprior", "bitsback")}
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        missing = [n for n in wanted if n not in models]
        if missing:
            sys.exit(f"not in the zoo: {', '.join(missing)} (have: {', '.join(models) or 'none'})")
        return [models[n] for n in wanted]
    # the curves: the zoo's series (<kind>-mse-<lambda>); experiments such as bitsback-wide-mse-0.01 only by name
    series = [m for name, m in models.items() if re.fullmatch(r"(hyperprior|bitsback)-mse-[0-9.]+", name)]
    return sorted(series, key=lambda m: (m["config"]["kind"] != "hyperprior", m["config"]["lmbda"]))


def selected_methods(args) -> List[str]:
    """The methods of ``--methods``, in order."""
    return [m.strip() for m in args.methods.split(",") if m.strip()]


def stages(models: List[Dict], paths: Sequence[str], args) -> List[tuple]:
    """(stage name, model name, methods, image paths) in priority order."""
    methods = selected_methods(args)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        sys.exit(f"unknown method(s): {', '.join(unknown)}")
    if args.ablation_lambdas.strip() == "all":
        abl_lambdas = {float(m["config"]["lmbda"]) for m in models}
    else:
        abl_lambdas = {float(v) for v in args.ablation_lambdas.split(",") if v.strip()}
    out = []
    if "amortized" in methods:
        out += [("amortized", m["name"], ["amortized"], paths) for m in models]
    for m in models:
        wanted = [x for x in MAIN_METHODS[m["config"]["kind"]] if x in methods]
        if wanted:
            out.append(("main", m["name"], wanted, paths))
    for m in models:
        if float(m["config"]["lmbda"]) in abl_lambdas:
            wanted = [x for x in ABLATION_METHODS[m["config"]["kind"]] if x in methods]
            if wanted:
                out.append(("ablation", m["name"], wanted, paths[:args.ablation_count]))
    return out


def image_major(plan: List[tuple], block: int) -> List[tuple]:
    """The plan's runs reordered image by image: the amortized stages first (they are quick), then for each block
    of ``block`` images (one per worker) every main-curve model. Progress that stops part-way then covers the
    first images at *every* lambda, which is what the curves and BD-rates of the first N images need
    (``--count N --report-only``), instead of all images of the first few lambdas. The ablations run as soon as
    the main curves cover their subset (the first images), before the main curves go on to the other images:
    the ablation chart (Figure 5) is then complete early instead of at the very end."""
    out = [s for s in plan if s[0] == "amortized"]
    main = [s for s in plan if s[0] == "main"]
    ablation = [s for s in plan if s[0] == "ablation"]

    def blocks(stages: List[tuple], lo: int, hi: int) -> List[tuple]:
        runs = []
        for start in range(lo, hi, block):
            end = min(start + block, hi)
            runs += [(stage, name, methods, paths[start:end]) for stage, name, methods, paths in stages
                     if paths[start:end]]
        return runs

    subset = max((len(s[3]) for s in ablation), default=0)
    longest = max((len(s[3]) for s in main), default=0)
    return out + blocks(main, 0, subset) + blocks(ablation, 0, subset) + blocks(main, subset, longest)


def run_offsets(plan: List[tuple]) -> List[int]:
    """For each stage of ``plan``, how many runs (image x method) come before it: the workers' shares alternate
    over the whole plan (``evaluate.shard_jobs``), so a stage of one run (one image, one method: Tecnick) does
    not always fall to worker 0."""
    sizes = [len(paths) * len(methods) for _, _, methods, paths in plan]
    return [sum(sizes[:i]) for i in range(len(sizes))]


def _estimate_seconds(records: List[Dict], model: str, method: str, iterations: int,
                      bbvi_iterations: Optional[int] = None) -> Optional[float]:
    """Seconds per megapixel of one (image, method) run: seconds per iteration from the cache times the
    iterations, plus the run's other time (amortized encoder, coding, decoding); from this model's records if
    any, else any model's.  Times are taken as proportional to the pixel count.  A bits-back record's other
    time is mostly its reproducible BBVI (run by the encoder and again by the decoder), so it is scaled by
    ``bbvi_iterations`` over the record's."""
    for same_model in (True, False):
        recs = [r for r in records if r.get("method") == method and (r.get("model") == model or not same_model)
                and r.get("encode_seconds") is not None and r.get("height") and r.get("width")]
        if not recs:
            continue
        mpix = [r["height"] * r["width"] / 1e6 for r in recs]
        spi = [r["seconds_per_iteration"] / m for r, m in zip(recs, mpix) if r.get("seconds_per_iteration")]
        total = [(r["encode_seconds"] + r.get("decode_seconds", 0.0)) / m for r, m in zip(recs, mpix)]
        # the time outside the SGA iterations, per megapixel, scaled to the job's BBVI steps
        rest = [(t - (r.get("seconds_per_iteration") or 0.0) / m * r.get("iterations", 0))
                * (bbvi_iterations / r["bbvi_iterations"] if bbvi_iterations and r.get("bbvi_iterations") else 1.0)
                for t, r, m in zip(total, recs, mpix)]
        if spi and iterations:
            overhead = statistics.median([o for o, r in zip(rest, recs) if r.get("seconds_per_iteration")])
            return statistics.median(spi) * iterations + max(overhead, 0.0)
        if iterations and all(r.get("iterations") for r in recs):  # no per-iteration timing: scale the whole run
            return statistics.median([t * iterations / r["iterations"] for t, r in zip(total, recs)])
        return statistics.median(rest)
    return None


def _megapixels(path: str) -> float:
    from PIL import Image
    with Image.open(path) as img:
        return img.width * img.height / 1e6


def _cpu(machine: Optional[str]) -> str:
    """CPU model and cores of a record's machine (the kernel release differs between sessions of one machine)."""
    return (machine or "").rsplit(",", 1)[0]


def timing_records(cache: str) -> List[Dict]:
    """Records of the other caches under examples/results/ made on this kind of machine (timings for the ETA)."""
    from tfc_inference.evaluate import load_cache, machine_description
    here = _cpu(machine_description())
    results = os.path.join(REPO, "examples", "results")
    out = []
    for folder in sorted(os.listdir(results)) if os.path.isdir(results) else []:
        path = os.path.join(results, folder, "cache.jsonl")
        if os.path.isfile(path) and os.path.abspath(path) != os.path.abspath(cache):
            out += [r for r in load_cache(path) if _cpu(r.get("machine")) == here and "fingerprint" in r]
    return out


#: Methods whose steps cost what an SGA step costs (same graph, another discretizer): timed as SGA until timed
SAME_COST_AS = {"map": "sga", "ste": "sga", "uniform-noise": "sga", "deterministic-annealing": "sga"}


def _unhindered(records: List[Dict]) -> List[Dict]:
    """Records whose wall-clock encode time is not inflated: those with a recorded process CPU time lose the ones
    whose wall-clock exceeds it by over 25% (paused, or sharing the cores with another job)."""
    return [r for r in records if r.get("encode_cpu_seconds") is None
            or r["encode_seconds"] <= 1.25 * r["encode_cpu_seconds"]]


def estimate_run_seconds(records: List[Dict], machine: str, model: str, method: str,
                         iterations: int, own: Sequence[Dict] = (), pixels: Optional[int] = None,
                         bbvi_iterations: Optional[int] = None) -> Optional[float]:
    """:func:`_estimate_seconds` from the first of these that times this method: ``own`` (this dataset's cache)
    made on ``machine``'s CPU, ``records`` of images of ``pixels`` pixels made on that CPU (the cost per pixel
    grows with the image size), all records made on that CPU, all records (the machine can change between
    sessions, and CPUs differ by 1.5x here; one CPU name can hide different instruction sets). A method without
    records of its own is timed as the method in :data:`SAME_COST_AS`."""
    records = _unhindered(records)
    here = [r for r in records if _cpu(r.get("machine")) == _cpu(machine)]
    own_here = [r for r in _unhindered(list(own)) if _cpu(r.get("machine")) == _cpu(machine)]
    same_size = [r for r in here if pixels and r.get("height", 0) * r.get("width", 0) == pixels]
    for m in (method, SAME_COST_AS.get(method)):
        for pool in (own_here, same_size, here, records):
            sec = m and _estimate_seconds(pool, model, m, iterations, bbvi_iterations)
            if sec:
                return sec
    return None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main(argv=None, dataset: str = "kodak", images: str = os.path.join(SHARED, "kodak"), ablation_count: int = 3,
         published: Optional[str] = None, ablation_lambdas: str = "all") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, dataset, images, ablation_count, published, ablation_lambdas)
    from tfc_inference import baselines, evaluate, report, zoo
    # the runs go image by image across the models: load each model once and keep it (they are small)
    load_model = functools.lru_cache(maxsize=None)(zoo.load_model)
    if args.workers < 1:
        sys.exit(f"--workers must be at least 1, got {args.workers}")
    from tfc_inference.data import list_images
    out = args.out or os.path.join(REPO, "examples", "results", args.dataset)
    cache = os.path.join(out, "cache.jsonl")
    base_cache = os.path.join(out, "baselines.jsonl")
    if not os.path.isdir(args.images):
        sys.exit(f"image folder not found: {args.images}")
    paths = list_images([args.images])
    paths = paths[:args.count] if args.count else paths
    if not paths:
        sys.exit(f"no images in {args.images}")

    if args.worker:
        shard = evaluate.parse_shard(args.worker)
        ordered = image_major(stages(zoo_models(args.models), paths, args), shard[1])
        for (stage, name, methods, stage_paths), offset in zip(ordered, run_offsets(ordered)):
            evaluate.run(load_model(name), stage_paths, methods, cache, seed=args.seed,
                         bbvi_iterations=args.bbvi_iterations, shard=shard, shard_offset=offset,
                         **_iterative_options(args, stage))
        return 0

    if not args.report_only:
        models = zoo_models(args.models)
        plan = stages(models, paths, args)
        records = evaluate.load_cache(cache)
        timings = records + timing_records(cache)
        print(f"{args.dataset}: {len(paths)} images from {args.images}; {len(models)} zoo models; "
              f"iterations {args.iterations}; cache {os.path.relpath(cache, REPO)}")
        # baselines: counted without running
        codecs = baselines.available_codecs()
        done_b = {baselines.baseline_key(r) for r in evaluate.load_cache(base_cache) if "codec" in r}
        todo_b = sum(1 for p in paths for c in codecs.values() for q in c.levels
                     if (c.name, c.settings, os.path.basename(p), float(q)) not in done_b)
        print(f"  baselines ({', '.join(codecs)}): {len(paths) * sum(len(c.levels) for c in codecs.values()) - todo_b}"
              f" done, {todo_b} to do" + (" (skipped)" if args.skip_baselines else ""))
        total_eta, unknown = 0.0, []
        machine = evaluate.machine_description()
        loaded = {}
        for stage, name, methods, stage_paths in plan:
            if name not in loaded:
                loaded = {name: zoo.load_model(name)}  # one model in memory at a time
            keys, jobs, _ = evaluate.plan(loaded[name], stage_paths, methods, cache, seed=args.seed,
                                          bbvi_iterations=args.bbvi_iterations, records=records,
                                          **_iterative_options(args, stage))
            eta = 0.0
            for job in jobs:
                megapixels = _megapixels(job[0])
                sec = estimate_run_seconds(timings, machine, name, job[1], job[2], own=records,
                                           pixels=round(megapixels * 1e6), bbvi_iterations=args.bbvi_iterations)
                if sec is None:
                    unknown.append(job[1])
                else:
                    eta += sec * megapixels
            total_eta += eta
            print(f"  {stage:9s} {name:24s} {','.join(methods):48s} {len(keys) - len(jobs):4d} done "
                  f"{len(jobs):4d} to do" + (f"  ~{_hours(eta)}" if jobs and eta else ""))
        abl = [s for s in plan if s[0] == "ablation"]
        if not abl:
            if not set(selected_methods(args)).intersection(x for xs in ABLATION_METHODS.values() for x in xs):
                print("  ablation: none of its methods selected (--methods)")
            else:
                print(f"  ablation: no zoo model with a lambda in {args.ablation_lambdas} (--ablation-lambdas)")
        note = f" (+ {len(unknown)} runs of {', '.join(sorted(set(unknown)))} without timings in the cache)" \
            if unknown else ""
        proxied = sorted({j for s in plan for j in s[2] if j in SAME_COST_AS})
        print(f"ETA of what remains: ~{_hours(total_eta)} of run time{note}, ~{_hours(total_eta / args.workers)} "
              f"with --workers {args.workers} (if the cached runs took as long with as many workers); estimated "
              f"from the caches' seconds per iteration, this machine's where it has some, leaving out runs whose "
              f"wall-clock time exceeds their CPU time (paused or crowded)"
              + (f"; {', '.join(proxied)} timed as SGA until they have timings" if proxied else ""))
        if args.list:
            return 0
        os.makedirs(out, exist_ok=True)
        if not args.skip_baselines and todo_b:
            baselines.run(paths, base_cache)
        if args.workers > 1:
            t0 = time.time()
            code = run_workers(argv, args.workers)
            if code:
                sys.exit(f"a worker failed (exit code {code}); rerun to continue from the cache")
            print(f"{args.workers} workers: {time.time() - t0:.0f} s", flush=True)
            plan = []
        for stage, name, methods, stage_paths in image_major(plan, 1):
            t0 = time.time()
            evaluate.run(load_model(name), stage_paths, methods, cache, seed=args.seed,
                         bbvi_iterations=args.bbvi_iterations, **_iterative_options(args, stage))
            print(f"{stage} {name} {','.join(methods)} {len(stage_paths)} image(s): {time.time() - t0:.0f} s",
                  flush=True)
    caches = [c for c in (cache, base_cache) if os.path.isfile(c)]
    if not caches:
        sys.exit("no caches yet: nothing to report")
    rel = [os.path.relpath(c, REPO) for c in caches]
    command = " ".join(["tfc-inference report"] + [f"--cache {c}" for c in rel]
                       + [f"--out {os.path.relpath(out, REPO)}", f"--dataset {args.dataset}"]
                       + ([f"--published {args.published}"] if args.published else []))
    records = report.load_records(caches)
    report_out, label, published = out, args.dataset, args.published
    if args.count:  # the report of the first N images only (an interim report while the runs go on)
        names = {os.path.basename(p) for p in paths}
        records = [r for r in records if r.get("image") in names]
        report_out = os.path.join(out, f"first-{args.count}-images")
        # part of the published curves' set: they are shown for scale, never used as anchors
        label, published = f"{args.dataset} (first {len(paths)} images)", args.published or args.dataset
        script = os.path.abspath(sys.argv[0])
        invoked = os.path.basename(script) in ("kodak.py", "tecnick.py")  # else called as a function (tests)
        words = sys.argv[1:] if invoked else argv
        words = [w for w in words if w not in ("--report-only", "--list")] + ["--report-only"]
        command = " ".join(["python", os.path.relpath(script, REPO) if invoked else "examples/kodak.py"] + words)
    rep = report.write(records, report_out, label, published, caches=rel, command=command,
                       subset=bool(args.count))
    print(f"report: {os.path.relpath(os.path.join(report_out, 'summary.md'), REPO)} ({len(rep.files)} files); "
          f"commit the caches ({', '.join(rel)}) so that progress survives a change of machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
