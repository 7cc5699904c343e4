"""Command-line interface: ``tfc-inference`` (or ``python -m tfc_inference``).

Subcommands::

    tfc-inference compress IMAGE [-o OUT.tfci] [--model NAME] [--method METHOD] [--iterations N] [--seed S]
                           [--preset paper|best|fast] [--schedule improved|paper] [--rounding FN]
                           [--three-class] [--side-info FILE] [--bbvi-iterations N]
    tfc-inference decompress FILE.tfci [-o OUT.png] [--model NAME] [--side-info-out FILE]
    tfc-inference models [--json]
    tfc-inference train --name NAME --data FOLDER [...]
    tfc-inference export NAME DIR
    tfc-inference demo [--model NAME] [--image PATH] [--methods amortized,sga] [--iterations N]
    tfc-inference evaluate --model NAME --images FOLDER [--methods amortized,sga] [--cache FILE]
    tfc-inference baselines --images FOLDER --cache FILE [--codecs jpeg,jpeg2000,webp,avif,jpegxl] [--count N]
    tfc-inference report --cache FILE [--cache FILE ...] --out DIR [--dataset NAME] [--published kodak|tecnick|none]

Errors the user can cause (missing or unreadable files, bad images or bitstreams, unknown models, bad training
options) print one line ``tfc-inference: error: ...`` on stderr and exit with status 1; command-line usage errors
exit with status 2.  Output files are written atomically (a temporary file in the same folder, then renamed), so a
failed run never leaves a half-written output behind, and ``compress`` / ``decompress`` never replace an existing
file unless ``--force`` is given.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import importlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from typing import List, Optional, Sequence

PROG = "tfc-inference"
DEFAULT_MODEL = "hyperprior-mse-0.01"
#: Inference methods; the last three need a bits-back model.
CLI_METHODS = ("amortized", "sga", "map", "ste", "uniform-noise", "deterministic-annealing",
               "sga+bb", "bb-no-sga", "bb-amortized")
BB_METHODS = ("sga+bb", "bb-no-sga", "bb-amortized")
DEFAULT_DEMO_METHODS = "amortized,sga"
DEFAULT_DEMO_ITERATIONS = 500
#: ``compress --method sga`` without a preset or SGA options runs this preset
DEFAULT_SGA_PRESET = "fast"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative ``None`` of optional values and the defaults of flags."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help or ""
        return super()._get_help_string(action)


class _UserError(Exception):
    """An error the CLI reports in one line (exit status 1), raised by the CLI itself."""


# ----------------------------------------------------------------------------------------------------------------
# helpers
def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _describe_os_error(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def _iterative_inference_available() -> bool:
    """Whether the iterative methods (``tfc_inference.inference``) are installed."""
    try:
        importlib.import_module("tfc_inference.inference")
    except ImportError:
        return False
    return True


def _check_method_available(method: str) -> None:
    if method != "amortized" and not _iterative_inference_available():
        raise _UserError(f"method {method!r} needs iterative inference (tfc_inference.inference), which this "
                         f"installation does not have; use --method amortized")


def _write_atomic(path: str, data: bytes, force: bool = True) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename.

    ``force=False``: an existing ``path`` is never replaced (the temporary file is hard-linked into place, which
    fails if ``path`` appeared meanwhile)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as e:  # folder missing or not writable: name the output, not the temporary file
        raise type(e)(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _UserError(f"{path} exists; use --force to overwrite it") from None
            except OSError:  # a file system without hard links: check, then rename
                if os.path.lexists(path):
                    raise _UserError(f"{path} exists; use --force to overwrite it") from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _deadline(seconds: float, what: str):
    """Ends the process with a one-line error (exit status 1) unless cancelled within ``seconds``.

    The decoder fuzz (examples/fuzz_decoder.py) found files -- damaged and then given a valid CRC, i.e. crafted
    -- that send TensorFlow Compression's range decoder into an endless loop (its Elias-gamma overflow decoding
    reads zero bits forever once the stream is exhausted); a C++ op cannot be interrupted, so the only way out
    is to end the process.  Output files are written only after decoding, so nothing is left behind."""
    import threading

    def expire():
        sys.stderr.write(f"{PROG}: error: {what} did not finish within {seconds:g} s; gave up (a damaged or crafted "
                         f"file can make the range decoder loop forever)\n")
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def _png_bytes(image) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _default_output(input_path: str, suffix: str) -> str:
    root, _ = os.path.splitext(input_path)
    out = root + suffix
    if os.path.abspath(out) == os.path.abspath(input_path):
        out = input_path + suffix  # never overwrite the input by default
    return out


def _check_output_path(path: str, force: bool = True) -> None:
    """Fails early (before any slow work) when ``path`` cannot be written as a file (or exists, without force)."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not force and os.path.lexists(path):
        raise _UserError(f"{path} exists; use --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "output folder does not exist", path)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _load_model(name: str):
    from tfc_inference import zoo
    return zoo.load_model(name)


# ----------------------------------------------------------------------------------------------------------------
# subcommands
def cmd_compress(args) -> int:
    from tfc_inference import codec
    from tfc_inference.data import read_image
    _check_method_available(args.method)
    image = read_image(args.input)
    output = args.output or _default_output(args.input, ".tfci")
    _check_output_path(output, args.force)
    model = _load_model(args.model)
    options = {}
    explicit = (args.iterations, args.schedule, args.learning_rate, args.rounding)
    if args.preset is None and args.method == "sga" and all(v is None for v in explicit) and not args.three_class:
        # `fast` measured within 0.5% of the paper's 2000-step SGA (examples/results/iterations_study)
        args.preset = DEFAULT_SGA_PRESET
    if args.preset is not None:
        from tfc_inference import presets
        if args.method not in presets.METHODS:
            raise _UserError(f"--preset applies to {' and '.join(presets.METHODS)} only")
        options["preset"] = args.preset
    if args.method != "amortized":
        if args.iterations is not None:
            options["iterations"] = args.iterations
        if args.seed is not None:
            options["seed"] = args.seed
        if args.schedule is not None:
            options["schedule"] = args.schedule
        if args.learning_rate is not None:
            options["learning_rate"] = args.learning_rate
        if args.rounding is not None or args.three_class:
            if args.method not in ("sga", "deterministic-annealing"):
                raise _UserError("--rounding and --three-class apply to sga and deterministic-annealing only")
            from tfc_inference import rounding
            try:
                options["rounding"] = rounding.get(args.rounding)
            except ValueError as e:
                raise _UserError(str(e)) from None
            options["three_class"] = args.three_class
        if args.method in BB_METHODS:
            if args.side_info is not None:
                options["side_info"] = _read_bytes(args.side_info)
            if args.bbvi_iterations is not None:
                options["bbvi_iterations"] = args.bbvi_iterations
        else:
            options["progress"] = None if not args.quiet else False
    elif args.side_info is not None:
        raise _UserError("--side-info needs a bits-back method (sga+bb, bb-no-sga, bb-amortized)")
    t0 = time.perf_counter()
    result = codec.compress(model, image, method=args.method, **options)
    seconds = time.perf_counter() - t0
    _write_atomic(output, result.data, args.force)
    if not args.quiet:
        print(f"{args.input} -> {output}: {len(result.data)} bytes, {result.bpp:.4f} bpp "
              f"(estimated {result.estimated_bpp:.4f}), PSNR {result.psnr:.2f} dB, {args.method}, {seconds:.2f} s")
        if args.method in BB_METHODS:
            e = result.extra
            print(f"  bits-back: {e['side_info_bits'] // 8} bytes of side information inside; net "
                  f"{e['net_bits'] / result.num_pixels:.4f} bpp (estimated net "
                  f"{e['estimated_net_bits'] / result.num_pixels:.4f}; {e['pad_words']} pad words)")
    return 0


def cmd_decompress(args) -> int:
    from tfc_inference import codec
    data = _read_bytes(args.input)
    header = codec.read_header(data)
    output = args.output or _default_output(args.input, ".png")
    _check_output_path(output, args.force)
    if args.side_info_out is not None:
        _check_output_path(args.side_info_out, args.force)
    model = _load_model(args.model or header.model_name)
    t0 = time.perf_counter()
    timer = _deadline(args.timeout, f"decoding {args.input}") if args.timeout else None
    try:
        result = codec.decompress_details(data, model)
    finally:
        if timer is not None:
            timer.cancel()
    seconds = time.perf_counter() - t0
    _write_atomic(output, _png_bytes(result.image), args.force)
    if args.side_info_out is not None:
        if result.side_info is None:
            if header.method not in BB_METHODS:
                raise _UserError(f"{args.input} is not a bits-back file: it carries no side information "
                                 f"(image written to {output})")
            raise _UserError(f"{result.side_info_error} (image written to {output})")
        _write_atomic(args.side_info_out, result.side_info, args.force)
    if not args.quiet:
        print(f"{args.input} -> {output}: {header.width}x{header.height} pixels from {len(data)} bytes "
              f"({8 * len(data) / (header.width * header.height):.4f} bpp), model {header.model_name}, "
              f"{header.method}, {seconds:.2f} s")
    return 0


def _fmt(value, spec: str = "") -> str:
    if value is None or value == "":
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def cmd_models(args) -> int:
    from tfc_inference import zoo
    models = zoo.list_models()
    if args.json:
        print(json.dumps(models, indent=2, default=str))
        return 0
    if not models:
        print("no models found; searched " + ", ".join(str(d) for d in zoo.search_dirs()))
        return 0
    header = ["name", "kind", "lambda", "channels (N/M)", "training steps", "bpp", "PSNR dB"]
    rows = []
    for m in models:
        config = m.get("config") or {}
        training = m.get("training") or {}
        evaluation = m.get("evaluation") or {}
        kind = config.get("kind") or m.get("class")
        channels = (f"{config['num_filters']}/{config['latent_channels']}"
                    if "num_filters" in config and "latent_channels" in config else "-")
        rows.append([m["name"], _fmt(kind), _fmt(config.get("lmbda"), "g"), channels, _fmt(training.get("steps")),
                     _fmt(evaluation.get("bpp"), ".4f"), _fmt(evaluation.get("psnr"), ".2f")])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def cmd_train(args) -> int:
    from tfc_inference.train import TrainOptions, train
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainOptions)}
    train(TrainOptions(**values))
    return 0


def cmd_export(args) -> int:
    from tfc_inference.export import export_saved_model
    target = os.path.abspath(args.directory)
    if os.path.exists(target) and not os.path.isdir(target):
        raise _UserError(f"{args.directory} exists and is not a directory")
    if os.path.isdir(target) and os.listdir(target) and not os.path.isfile(os.path.join(target, "saved_model.pb")):
        raise _UserError(f"{args.directory} is not empty and holds no SavedModel; refusing to overwrite it")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, "output folder does not exist", parent)
    model = _load_model(args.model)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=parent)
    old = moved = None
    try:
        export_saved_model(model, tmp)
        if os.path.isdir(target):  # replace a previous export (or an empty folder)
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".old", dir=parent)
            moved = os.path.join(old, "previous")
            os.replace(target, moved)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if moved is not None and os.path.isdir(moved) and not os.path.exists(target):
            os.replace(moved, target)  # put the previous export back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    os.chmod(target, 0o777 & ~_umask())
    print(f"exported {getattr(model, 'zoo_name', args.model)} to {args.directory}")
    return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _parse_methods(text: str) -> List[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise argparse.ArgumentTypeError("no method given")
    for m in methods:
        if m not in CLI_METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {m!r} (choose from {', '.join(CLI_METHODS)})")
    if len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError("a method is listed twice")
    return methods


def cmd_demo(args) -> int:
    import numpy as np
    import tfc_inference
    from tfc_inference import codec
    from tfc_inference.data import read_image
    methods = list(args.methods)
    if any(m != "amortized" for m in methods) and not _iterative_inference_available():
        skipped = [m for m in methods if m != "amortized"]
        methods = [m for m in methods if m == "amortized"]
        print(f"note: iterative inference (tfc_inference.inference) is not available in this installation; "
              f"skipping {', '.join(skipped)}", file=sys.stderr)
        if not methods:
            raise _UserError("none of the requested methods is available; use --methods amortized")
    image_path = args.image or tfc_inference.DEMO_IMAGE
    image = read_image(image_path)
    model = _load_model(args.model)
    height, width = image.shape[:2]
    print(f"model {getattr(model, 'zoo_name', args.model)} (lambda {model.config.lmbda:g}), image "
          f"{os.path.basename(image_path)} ({width}x{height})")
    print()
    header = ["method", "file bytes", "bpp (file)", "estimated bpp", "PSNR dB", "R-D loss", "encode s",
              "decode s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    mismatches = []
    from tfc_inference import presets
    for method in methods:
        options = {} if method == "amortized" else {"seed": args.seed, "progress": None}
        label = method
        if method in presets.METHODS and args.preset != "none":
            options["preset"] = args.preset
            label = f"{method} ({args.preset})"
            if args.iterations is not None:
                options["iterations"] = args.iterations
        elif method != "amortized":
            options["iterations"] = args.iterations or DEFAULT_DEMO_ITERATIONS
        t0 = time.perf_counter()
        result = codec.compress(model, image, method=method, **options)
        encode_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded = codec.decompress_details(result.data, model)
        decode_seconds = time.perf_counter() - t0
        if not np.array_equal(decoded.image, result.reconstruction):
            mismatches.append(method)
        row = [label, str(len(result.data)), f"{result.bpp:.4f}", f"{result.estimated_bpp:.4f}",
               f"{result.psnr:.2f}", f"{result.rd_loss:.4f}", f"{encode_seconds:.2f}", f"{decode_seconds:.2f}"]
        print("| " + " | ".join(row) + " |", flush=True)
    print()
    if mismatches:
        raise _UserError(f"decoded image differs from the encoder's reconstruction for: {', '.join(mismatches)}")
    print(f"decoded every file again: each image equals the encoder's reconstruction ({len(methods)} checked)")
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np
    from tfc_inference import evaluate
    from tfc_inference.data import list_images
    from tfc_inference.errors import ImageError
    paths = list_images([args.images])[:args.count] if os.path.isdir(args.images) else []
    if not paths:
        raise ImageError(f"no images found in {args.images}")
    methods = [m for m in args.methods.split(",") if m]
    print("| model | method | images | bpp (file) | bpp (est.) | PSNR dB | R-D loss | encode s | decoded exactly |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for number, name in enumerate(args.model):
        model = _load_model(name)
        records = evaluate.run(model, paths, methods, args.cache, iterations=args.iterations,
                               schedule=args.schedule, seed=args.seed, eval_every=args.eval_every,
                               shard=args.shard, shard_offset=number * len(paths) * len(methods))
        for method in methods:
            recs = [r for r in records if r["method"] == method]
            if not recs:
                continue
            mean = lambda key: float(np.mean([r[key] for r in recs]))  # noqa: E731
            print(f"| {getattr(model, 'zoo_name', name)} | {method} | {len(recs)} | {mean('bpp'):.4f} | "
                  f"{mean('estimated_bpp'):.4f} | {mean('psnr'):.2f} | {mean('loss'):.4f} | "
                  f"{mean('encode_seconds'):.1f} | {all(r['decoded_exactly'] for r in recs)} |", flush=True)
    print(f"\nper-image records: {args.cache}")
    return 0


def cmd_baselines(args) -> int:
    from tfc_inference import baselines
    from tfc_inference.data import list_images
    from tfc_inference.errors import ImageError
    available = baselines.available_codecs()
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()] if args.codecs else list(available)
    unknown = [c for c in codecs if c not in available]
    if unknown:
        raise _UserError(f"codec {unknown[0]!r} is not available here (available: "
                         f"{', '.join(available) or 'none; install imagecodecs'})")
    if not codecs:
        raise _UserError("no codec given")
    if not os.path.isdir(args.images):
        raise FileNotFoundError(errno.ENOENT, "no such folder", args.images)
    paths = list_images([args.images])[:args.count]
    if not paths:
        raise ImageError(f"no images found in {args.images}")
    if os.path.isdir(args.cache):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), args.cache)
    records = baselines.run(paths, args.cache, codecs, progress=not args.quiet)
    if not args.quiet:
        print("| codec | level | images | bpp | PSNR dB | MS-SSIM |")
        print("|---|---:|---:|---:|---:|---:|")
        groups = {}
        for r in records:
            groups.setdefault((r["codec"], r["level"]), []).append(r)
        for (codec, level), recs in groups.items():
            ms = [r["ms_ssim"] for r in recs]
            ms_text = "-" if any(v is None for v in ms) else f"{sum(ms) / len(ms):.4f}"
            print(f"| {codec} | {level:g} | {len(recs)} | {sum(r['bpp'] for r in recs) / len(recs):.4f} | "
                  f"{sum(r['psnr'] for r in recs) / len(recs):.2f} | {ms_text} |")
        print(f"\nper-image records: {args.cache}")
    return 0


def cmd_report(args) -> int:
    from tfc_inference import report
    for module in ("bjontegaard", "matplotlib"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise _UserError(f"report needs the {module} package: pip install \"tfc_inference[examples]\"") from None
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise _UserError(f"{args.out} exists and is not a directory")
    records = report.load_records(args.cache)
    if not any(report.is_learned(r) or report.is_baseline(r) for r in records):
        raise _UserError(f"no evaluation records in {', '.join(args.cache)}")
    dataset = args.dataset or os.path.basename(os.path.normpath(os.path.abspath(args.out)))
    command = " ".join(["tfc-inference report"] + [f"--cache {c}" for c in args.cache] + [f"--out {args.out}"]
                       + ([f"--dataset {args.dataset}"] if args.dataset else [])
                       + ([f"--published {args.published}"] if args.published else [])
                       + ([f"--min-points {args.min_points}"] if args.min_points != report.DEFAULT_MIN_POINTS
                          else []) + (["--allow-partial"] if args.allow_partial else []))
    rep = report.write(records, args.out, dataset, args.published, args.min_points, args.allow_partial,
                       caches=args.cache, command=command)
    if not args.quiet:
        print(f"{dataset}: {len(rep.images)} images, {len(rep.ours)} learned curve(s), {len(rep.baselines)} live "
              f"baseline(s), {len(rep.published)} published curve(s)")
        print(f"wrote {len(rep.files)} files to {args.out}: {os.path.join(args.out, 'summary.md')}")
    return 0


def cmd_benchmark(args) -> int:
    import tfc_inference
    from tfc_inference import benchmark, evaluate
    from tfc_inference.data import read_image
    from tfc_inference.models import build_model
    model = _load_model(args.model)
    bb_config = dataclasses.replace(model.config, kind="bitsback")
    bits_back_model = _load_model(args.bits_back_model) if args.bits_back_model else build_model(bb_config)
    image = read_image(args.image or tfc_inference.DEMO_IMAGE)
    report = benchmark.run(model, image, bits_back_model, steps=args.steps, batch=args.batch)
    text = benchmark.markdown(report, getattr(model, "zoo_name", args.model), evaluate.machine_description())
    print(text)
    if args.out:
        _write_atomic(args.out, (text + "\n").encode())
    return 0


# ----------------------------------------------------------------------------------------------------------------
# parser
def build_parser() -> argparse.ArgumentParser:
    import tfc_inference
    from tfc_inference.train import TrainOptions
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)
                if f.default is not dataclasses.MISSING}

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_HelpFormatter,
        description="Neural image compression with improved inference (Yang, Bamler & Mandt 2020): "
                    "compress and decompress images with a trained hyperprior codec, train and export codecs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {tfc_inference.__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    parser.subcommands = {}

    def add(name: str, help: str) -> argparse.ArgumentParser:
        parser.subcommands[name] = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        return parser.subcommands[name]

    p = add("compress", "compress an image to a .tfci file")
    p.add_argument("input", metavar="IN", help="image to compress (PNG, JPEG, ...; 8-bit RGB or grayscale)")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (default: IN with the suffix .tfci)")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME", help="zoo model name or checkpoint folder")
    p.add_argument("--method", default="amortized", choices=CLI_METHODS,
                   help="how the encoder infers the latents: the encoder networks (amortized) or an iterative "
                        "method")
    p.add_argument("--preset", choices=("paper", "best", "fast"),
                   help="sga / sga+bb settings measured in examples/results/iterations_study: paper (the paper's "
                        "SGA), best (lowest loss at 2000 steps), fast (500 steps, within 0.5%% of paper; the "
                        "default of sga when none of --iterations/--schedule/--learning-rate/--rounding/"
                        "--three-class is given; otherwise the official code's settings); the options below "
                        "override the preset's")
    p.add_argument("--iterations", type=_positive_int, metavar="N",
                   help="iterations of an iterative method (default: the method's own)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed of a stochastic iterative method")
    p.add_argument("--schedule", choices=("improved", "paper"),
                   help="temperature schedule of SGA / deterministic annealing (default: improved, stretched "
                        "to the iteration budget)")
    p.add_argument("--learning-rate", type=float, metavar="LR",
                   help="Adam learning rate of the iterative method (default: the method's own)")
    p.add_argument("--rounding", metavar="FN",
                   help="sga / deterministic-annealing: rounding-probability function: atanh (the paper's, "
                        "default), linear, cosine or sigmoid_logit(a=SCALE)")
    p.add_argument("--three-class", action="store_true",
                   help="sga / deterministic-annealing: round among round(v)-1, round(v), round(v)+1 instead of "
                        "floor / ceil")
    p.add_argument("--side-info", metavar="FILE",
                   help="bits-back methods: bytes to carry inside the file for free (recovered by decompress "
                        "--side-info-out)")
    p.add_argument("--bbvi-iterations", type=_positive_int, metavar="N",
                   help="bits-back methods: steps of reproducible BBVI (default 2000; the decoder reruns them)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite the output file if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_compress)

    p = add("decompress", "decompress a .tfci file to a PNG image")
    p.add_argument("input", metavar="IN", help=".tfci file to decompress")
    p.add_argument("-o", "--output", metavar="OUT", help="output PNG (default: IN with the suffix .png)")
    p.add_argument("--model", metavar="NAME",
                   help="zoo model name or checkpoint folder (default: the model named in the file)")
    p.add_argument("--side-info-out", metavar="FILE",
                   help="bits-back files: write the recovered side information to FILE")
    p.add_argument("-f", "--force", action="store_true", help="overwrite the output files if they exist")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up (exit status 1) if decoding takes longer: for files from untrusted sources, "
                        "which can make the range decoder loop forever")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_decompress)

    p = add("models", "list the models of the zoo")
    p.add_argument("--json", action="store_true", help="print the models' full information as JSON")
    p.set_defaults(func=cmd_models)

    p = add("train", "train a codec (resumable) and export it to the zoo")
    p.add_argument("--name", required=True, help="run and model name (the zoo folder name)")
    p.add_argument("--data", action="append", required=True, metavar="FOLDER",
                   help="folder (searched recursively) or file of training images; repeat for several")
    p.add_argument("--steps", type=_positive_int, default=defaults["steps"], help="total training steps")
    p.add_argument("--lambda", dest="lmbda", type=float, default=defaults["lmbda"],
                   help="rate-distortion trade-off: loss = bpp + lambda * MSE (MSE on 0..255)")
    p.add_argument("--kind", choices=("hyperprior", "bitsback"), default=defaults["kind"],
                   help="model class: mean-scale hyperprior, or its bits-back variant")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default=defaults["precision"],
                   help="mixed_bfloat16: convolutions in bfloat16 (faster on CPUs with AVX-512 BF16), weights, "
                        "GDN and the loss in float32; the exported model is float32")
    p.add_argument("--min-variance", type=float, default=defaults["min_variance"],
                   help="bits-back models: lower bound on the variance of q(z|y) (0 = none)")
    p.add_argument("--num-filters", type=_positive_int, default=defaults["num_filters"],
                   help="channels of the analysis/synthesis transforms (N)")
    p.add_argument("--latent-channels", type=_positive_int, default=defaults["latent_channels"],
                   help="channels of the latents y (M)")
    p.add_argument("--hyper-filters", type=_positive_int, default=defaults["hyper_filters"],
                   help="channels of the hyper transforms")
    p.add_argument("--hyper-latent-channels", type=_positive_int, default=defaults["hyper_latent_channels"],
                   help="channels of the hyper-latents z")
    p.add_argument("--batch-size", type=_positive_int, default=defaults["batch_size"], help="crops per batch")
    p.add_argument("--crop", type=_positive_int, default=defaults["crop"], help="side of the random square crops")
    p.add_argument("--learning-rate", type=float, default=defaults["learning_rate"], help="Adam learning rate")
    p.add_argument("--lr-drop-fraction", type=float, default=defaults["lr_drop_fraction"],
                   help="fraction of the steps, at the end, trained with a 10x lower learning rate")
    p.add_argument("--seed", type=int, default=defaults["seed"], help="seed of the initialization and data order")
    p.add_argument("--work-dir", default=defaults["work_dir"],
                   help="folder of the runs (checkpoints, logs and run.json go to WORK_DIR/NAME)")
    p.add_argument("--output", default=defaults["output"],
                   help="zoo folder the final weights are exported to (as OUTPUT/NAME)")
    p.add_argument("--save-every", type=float, default=defaults["save_every"],
                   help="seconds between training checkpoints")
    p.add_argument("--log-every", type=_positive_int, default=defaults["log_every"],
                   help="steps between logged losses")
    p.add_argument("--resume", action="store_true", help="continue the run's newest checkpoint")
    p.add_argument("--init-from", metavar="MODEL",
                   help="initialize the weights from this zoo model (fine-tuning, or a bits-back model from a "
                        "base one)")
    p.add_argument("--eval-dir", metavar="FOLDER",
                   help="after training, measure the amortized R-D on images of this folder (e.g. Kodak)")
    p.add_argument("--eval-images", type=_positive_int, default=defaults["eval_images"],
                   help="number of images of --eval-dir to evaluate")
    p.add_argument("--eval-every", type=int, default=defaults["eval_every"], metavar="N",
                   help="with --eval-dir: also evaluate every N steps (and at the run's start), appending to "
                        "WORK_DIR/NAME/eval_curve.jsonl (the PSNR-vs-steps curve; 0: only at the end)")
    p.add_argument("--max-cpu-hours", type=float, default=defaults["max_cpu_hours"], metavar="H",
                   help="stop and export once the run has used H CPU-hours (all threads, over resumes; 0: no "
                        "limit) — for comparisons at equal budget")
    p.add_argument("--stop-at", type=int, default=defaults["stop_at"], metavar="N",
                   help="stop and export at step N although the learning-rate schedule is laid out for --steps "
                        "(0: at --steps); a later run with --resume continues (chunks of a long run)")
    p.add_argument("--initial-step", type=int, default=defaults["initial_step"], metavar="N",
                   help="with --init-from: the weights already have N steps (continue an exported model whose "
                        "run folder is gone; fresh optimizer state)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="print a log line every --log-every steps instead of a progress bar")
    p.set_defaults(func=cmd_train)

    p = add("export", "export a model as a TensorFlow SavedModel with compress/decompress functions")
    p.add_argument("model", metavar="NAME", help="zoo model name or checkpoint folder")
    p.add_argument("directory", metavar="DIR", help="SavedModel folder to write (a previous export is replaced)")
    p.set_defaults(func=cmd_export)

    p = add("demo", "compress the bundled Kodak image with several methods and compare them")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME", help="zoo model name or checkpoint folder")
    p.add_argument("--image", metavar="PATH",
                   help="image to use instead of the bundled Kodak kodim23")
    p.add_argument("--methods", type=_parse_methods, default=DEFAULT_DEMO_METHODS,
                   help="comma-separated inference methods (iterative ones are skipped, with a note, when "
                        "iterative inference is not installed)")
    p.add_argument("--preset", choices=("paper", "best", "fast", "none"), default="fast",
                   help="settings of sga / sga+bb (tfc_inference.presets; none: the official code's schedule "
                        "stretched to --iterations)")
    p.add_argument("--iterations", type=_positive_int, metavar="N",
                   help=f"iterations of the iterative methods (default: the preset's; without a preset "
                        f"{DEFAULT_DEMO_ITERATIONS})")
    p.add_argument("--seed", type=int, default=0, help="random seed of the stochastic iterative methods")
    p.set_defaults(func=cmd_demo)

    p = add("evaluate", "really compress and decode a folder of images with several models and methods "
                        "(resumable: results are cached per image)")
    p.add_argument("--model", action="append", required=True, metavar="NAME", help="zoo model (repeatable)")
    p.add_argument("--images", required=True, metavar="FOLDER", help="folder of test images")
    p.add_argument("--count", type=_positive_int, default=1000, help="use the first N images (sorted by name)")
    p.add_argument("--methods", default="amortized,sga", help="comma-separated inference methods")
    p.add_argument("--iterations", type=_positive_int, default=2000, help="iterations of the iterative methods")
    p.add_argument("--schedule", choices=("improved", "paper"), help="temperature schedule (default: improved)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the stochastic methods")
    p.add_argument("--eval-every", type=_positive_int, default=50, help="steps between true R-D evaluations")
    p.add_argument("--cache", default="results/evaluate.jsonl", help="JSON-lines cache of per-image records")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                   help="run only the I-th of N disjoint shares of the runs (0-based), for N processes sharing "
                        "one cache; e.g. on 2 cores `TF_NUM_INTRAOP_THREADS=1 ... --shard 0/2` and `... 1/2`")
    p.set_defaults(func=cmd_evaluate)

    p = add("baselines", "run classical codecs (JPEG, JPEG2000, WebP, AVIF, JPEG XL) over a sweep of quality "
                         "settings on a folder of images (resumable: results are cached per image)")
    p.add_argument("--images", required=True, metavar="FOLDER", help="folder of test images")
    p.add_argument("--cache", required=True, metavar="FILE", help="JSON-lines cache of per-image records")
    p.add_argument("--codecs", metavar="LIST",
                   help="comma-separated codecs (default: every one this installation's imagecodecs supports)")
    p.add_argument("--count", type=_positive_int, default=1000, help="use the first N images (sorted by name)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no table")
    p.set_defaults(func=cmd_baselines)

    p = add("report", "R-D curves, BD-rate tables and the ablation chart from evaluation and baseline caches "
                      "(PNG, CSV, markdown and CompressAI-style JSON)")
    p.add_argument("--cache", action="append", required=True, metavar="FILE",
                   help="cache of `evaluate` or `baselines` records (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--dataset", metavar="NAME", help="dataset name for titles (default: the name of --out)")
    p.add_argument("--published", choices=("kodak", "tecnick", "none"),
                   help="published curves to compare with (default: the dataset's if it is kodak or tecnick)")
    p.add_argument("--min-points", type=_positive_int, default=4,
                   help="fewest points per curve for a BD-rate (fewer: n/a)")
    p.add_argument("--allow-partial", action="store_true",
                   help="also use points that do not cover every image (default: listed, not used)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_report)

    p = add("benchmark", "time each piece of the codec (amortized, SGA, bits-back stages, range coding) on one "
                         "image, with GFLOP/s and peak memory")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME", help="zoo model name or checkpoint folder")
    p.add_argument("--bits-back-model", metavar="NAME",
                   help="bits-back model for the BBVI timings (default: an untrained one of the same size)")
    p.add_argument("--image", metavar="PATH", help="image to use instead of the bundled Kodak kodim23")
    p.add_argument("--steps", type=_positive_int, default=10, help="optimizer steps per timing")
    p.add_argument("--batch", type=_positive_int, default=4, help="images per batch in the batched SGA timing")
    p.add_argument("--out", metavar="FILE", help="also write the markdown report to FILE")
    p.set_defaults(func=cmd_benchmark)
    return parser


def _shard(text: str):
    from tfc_inference.evaluate import parse_shard
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from tfc_inference.errors import TFCInferenceError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "compress" and args.method == "amortized" and (
                args.iterations is not None or args.seed is not None or args.schedule is not None
                or args.learning_rate is not None or args.rounding is not None or args.three_class):
            parser.subcommands["compress"].error("--iterations, --seed, --schedule, --learning-rate, --rounding "
                                                 "and --three-class apply to iterative methods only")
    except SystemExit as e:  # usage errors (2), --help and --version (0)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    try:
        import tensorflow as tf
        tf.get_logger().setLevel("ERROR")
    except ImportError:  # pragma: no cover
        pass
    import warnings
    from tfc_inference.errors import ImageConversionWarning, InexactDecodeWarning

    def show_notice(message, category, *unused):
        if issubclass(category, (ImageConversionWarning, InexactDecodeWarning)):
            print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr)
        else:
            default_showwarning(message, category, *unused)

    default_showwarning = warnings.showwarning
    warnings.showwarning = show_notice
    try:
        return args.func(args)
    except (TFCInferenceError, _UserError) as e:
        message = _one_line(e)
    except OSError as e:  # FileNotFoundError, IsADirectoryError, PermissionError, ... on the user's paths
        message = _one_line(_describe_os_error(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = default_showwarning
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
