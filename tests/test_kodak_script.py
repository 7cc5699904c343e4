"""Tests of the Kodak protocol script (examples/kodak.py): the order of its runs, its ETA, its first-N report."""
import contextlib
import io
import json
import os

import numpy as np

from tests import helpers
from tests.test_report import LAMBDAS, _curve_records


class ImageMajorTest(helpers.TestCase):

    def test_every_lambda_of_an_image_before_the_next_image(self):
        kodak = helpers.load_example("kodak")
        images = [f"img{i}.png" for i in range(5)]
        plan = [("amortized", "hp-1", ["amortized"], images), ("amortized", "hp-2", ["amortized"], images),
                ("main", "hp-1", ["sga"], images), ("main", "hp-2", ["sga"], images),
                ("main", "bb-1", ["sga+bb"], images), ("ablation", "hp-1", ["map", "ste"], images[:3])]
        for block in (1, 2):
            ordered = kodak.image_major(plan, block)
            self.assertEqual(ordered[:2], plan[:2])  # the quick amortized stages first, whole
            main = [s for s in ordered if s[0] == "main"]
            # block by block, all three main models, each with that block's images
            self.assertEqual([s[1] for s in main[:3]], ["hp-1", "hp-2", "bb-1"])
            self.assertEqual([s[3] for s in main[:3]], [images[:block]] * 3)
            # the same runs as the plan, none lost or repeated
            flat = sorted((s[0], s[1], m, p) for s in ordered for m in s[2] for p in s[3])
            self.assertEqual(flat, sorted((s[0], s[1], m, p) for s in plan for m in s[2] for p in s[3]))
            # the ablation keeps its own subset (the first 3 images) and runs as soon as the main curves cover
            # it: after their runs of images 0-2, before those of images 3-4
            self.assertEqual(sorted(p for s in ordered if s[0] == "ablation" for p in s[3]), images[:3])
            first_ablation = min(i for i, s in enumerate(ordered) if s[0] == "ablation")
            last_ablation = max(i for i, s in enumerate(ordered) if s[0] == "ablation")
            self.assertTrue(all(set(s[3]) <= set(images[:3]) for s in ordered[:first_ablation] if s[0] == "main"))
            self.assertTrue(all(set(s[3]) <= set(images[3:]) for s in ordered[last_ablation:] if s[0] == "main"))
            self.assertTrue(ordered[last_ablation + 1:])  # the other images' main runs follow


class WorkerShareTest(helpers.TestCase):

    def test_one_image_runs_alternate_between_two_workers(self):
        from tfc_inference import evaluate
        kodak = helpers.load_example("kodak")
        plan = [("main", f"hp-{i}", ["sga"], ["img0.png"]) for i in range(5)]
        plan += [("ablation", "hp-0", ["map", "ste", "uniform-noise"], ["img0.png"])]
        ordered = kodak.image_major(plan, 2)
        offsets = kodak.run_offsets(ordered)
        self.assertEqual(offsets, [0, 1, 2, 3, 4, 5])
        shares = {0: [], 1: []}
        for (stage, name, methods, paths), offset in zip(ordered, offsets):
            jobs = [(p, m, (name, p, m)) for p in paths for m in methods]
            keys = [job[-1] for job in jobs]
            for worker in shares:
                shares[worker] += [j[-1] for j in evaluate.shard_jobs(keys, jobs, (worker, 2), offset)]
        self.assertEqual([len(v) for v in shares.values()], [4, 4])  # 8 runs, 4 each
        self.assertEqual([k[0] for k in shares[0][:3]], ["hp-0", "hp-2", "hp-4"])
        self.assertEqual([k[0] for k in shares[1][:2]], ["hp-1", "hp-3"])


class AblationSubsetTest(helpers.TestCase):

    def _models(self):
        return [{"name": f"{kind}-{lmbda}", "config": {"kind": kind, "lmbda": lmbda}}
                for kind in ("hyperprior", "bitsback") for lmbda in (0.0025, 0.005, 0.01)]

    def _ablations(self, argv, **defaults):
        kodak = helpers.load_example("kodak")
        args = kodak.parse_args(argv, "kodak", "imgs", defaults.pop("ablation_count", 3), None, **defaults)
        plan = kodak.stages(self._models(), [f"img{i}.png" for i in range(5)], args)
        return {s[1]: s[3] for s in plan if s[0] == "ablation"}

    def test_every_lambda_by_default_so_the_ablation_curves_have_bd_rates(self):
        ablations = self._ablations([])
        self.assertEqual(sorted(ablations), sorted(m["name"] for m in self._models()))
        self.assertTrue(all(paths == [f"img{i}.png" for i in range(3)] for paths in ablations.values()))

    def test_a_list_of_lambdas_and_a_script_default(self):
        self.assertEqual(sorted(self._ablations(["--ablation-lambdas", "0.005", "--ablation-count", "2"])),
                         ["bitsback-0.005", "hyperprior-0.005"])
        self.assertEqual(sorted(self._ablations([], ablation_lambdas="0.0025,0.01")),
                         ["bitsback-0.0025", "bitsback-0.01", "hyperprior-0.0025", "hyperprior-0.01"])


class EtaTest(helpers.TestCase):

    def _rec(self, machine, spi, model="hp-1", method="sga", iterations=100):
        # 0.5 megapixels; 10 s outside the iterations
        return dict(model=model, method=method, machine=machine, height=500, width=1000, iterations=iterations,
                    seconds_per_iteration=spi, encode_seconds=spi * iterations + 8.0, decode_seconds=2.0)

    def test_this_machines_timings_first_then_any(self):
        kodak = helpers.load_example("kodak")
        fast, slow = "AMD EPYC, 2 cores, Linux 6.1-a", "Intel Xeon, 2 cores, Linux 6.1-b"
        recs = [self._rec(fast, 0.1), self._rec(slow, 0.3)]
        # per megapixel: 2000 iterations x spi / 0.5 MP + 10 s / 0.5 MP; the kernel release does not matter
        self.assertNear(kodak.estimate_run_seconds(recs, "Intel Xeon, 2 cores, Linux 6.2-c", "hp-1", "sga", 2000),
                        2000 * 0.3 / 0.5 + 20.0, 1e-6)
        self.assertNear(kodak.estimate_run_seconds(recs, fast, "hp-1", "sga", 2000), 2000 * 0.1 / 0.5 + 20.0, 1e-6)
        # a machine with no timing of this method falls back to every record (the median of both)
        self.assertNear(kodak.estimate_run_seconds(recs, "Other CPU, 2 cores, Linux", "hp-1", "sga", 2000),
                        2000 * 0.2 / 0.5 + 20.0, 1e-6)
        # MAP, untimed, costs what SGA costs; a bits-back ablation without timings has no estimate
        self.assertNear(kodak.estimate_run_seconds(recs, fast, "hp-1", "map", 2000), 2000 * 0.1 / 0.5 + 20.0, 1e-6)
        self.assertIsNone(kodak.estimate_run_seconds(recs, fast, "hp-1", "bb-no-sga", 2000))
        # a run paused or crowded (wall-clock 2x its CPU time) is left out; one with no CPU time is kept
        paused = dict(self._rec(fast, 0.5), encode_cpu_seconds=0.25 * 100 + 4.0)
        honest = dict(self._rec(fast, 0.1), encode_cpu_seconds=0.1 * 100 + 8.0)
        self.assertNear(kodak.estimate_run_seconds([paused, honest], fast, "hp-1", "sga", 2000),
                        2000 * 0.1 / 0.5 + 20.0, 1e-6)

    def test_this_datasets_timings_before_other_caches(self):
        kodak = helpers.load_example("kodak")
        here, other = "AMD EPYC, 2 cores, Linux 6.1-a", "Intel Xeon, 2 cores, Linux 6.1-b"
        others = [self._rec(here, 0.1)]  # another dataset's cache, this CPU: cheaper per pixel
        own = [self._rec(here, 0.4, model="hp-2"), self._rec(other, 0.2)]
        # this dataset's record on this CPU wins, even of another model (the cost per pixel depends on image size)
        self.assertNear(kodak.estimate_run_seconds(others + own, here, "hp-1", "sga", 2000, own=own),
                        2000 * 0.4 / 0.5 + 20.0, 1e-6)
        # then records of images of the job's size on this CPU
        big = dict(self._rec(here, 0.6), height=1000)
        self.assertNear(kodak.estimate_run_seconds(others + [big], here, "hp-1", "sga", 2000, pixels=1000 * 1000),
                        2000 * 0.6 / 1.0 + 10.0, 1e-6)
        # this dataset's records of another CPU do not beat other caches' records of this one
        self.assertNear(kodak.estimate_run_seconds(others + own[1:], here, "hp-1", "sga", 2000, own=own[1:]),
                        2000 * 0.1 / 0.5 + 20.0, 1e-6)

    def test_bits_back_time_scales_with_the_bbvi_steps(self):
        kodak = helpers.load_example("kodak")
        here = "AMD EPYC, 2 cores, Linux 6.1-a"
        # BBVI only (no SGA): 500 BBVI steps took 8 + 2 s on 0.5 MP; 2000 steps take 4x as long
        no_sga = dict(self._rec(here, 0.0, method="bb-no-sga", iterations=0), bbvi_iterations=500)
        self.assertNear(kodak.estimate_run_seconds([no_sga], here, "hp-1", "bb-no-sga", 0, bbvi_iterations=2000),
                        4 * 20.0, 1e-6)
        # SGA+BB: the SGA steps scale with the iterations, the rest with the BBVI steps
        sga_bb = dict(self._rec(here, 0.1, method="sga+bb"), bbvi_iterations=1000)
        self.assertNear(kodak.estimate_run_seconds([sga_bb], here, "hp-1", "sga+bb", 2000, bbvi_iterations=2000),
                        2000 * 0.1 / 0.5 + 2 * 20.0, 1e-6)
        self.assertNear(kodak.estimate_run_seconds([sga_bb], here, "hp-1", "sga+bb", 2000),  # not given: as recorded
                        2000 * 0.1 / 0.5 + 20.0, 1e-6)


class SubsetReportTest(helpers.TestCase):

    def test_first_n_images_report_is_a_subset_of_the_published_set(self):
        kodak = helpers.load_example("kodak")
        root = helpers.fresh_dir("subset")
        images, out = os.path.join(root, "images"), os.path.join(root, "results")
        os.makedirs(images)
        os.makedirs(out)
        names = ("a.png", "b.png", "c.png")
        for name in names:
            with open(os.path.join(images, name), "wb") as f:
                f.write(helpers.encode_image(np.zeros((8, 8, 3), np.uint8)))
        with open(os.path.join(out, "cache.jsonl"), "w") as f:
            for rec in _curve_records(LAMBDAS, names) + _curve_records(LAMBDAS, names, 0.9, method="sga", its=20):
                f.write(json.dumps(rec) + "\n")
        with contextlib.redirect_stdout(io.StringIO()):
            code = kodak.main(["--images", images, "--out", out, "--count", "2", "--report-only"])
        self.assertEqual(code, 0)
        with open(os.path.join(out, "first-2-images", "summary.md")) as f:
            summary = f.read()
        self.assertIn("kodak (first 2 images)", summary)
        self.assertIn("average all of kodak, this report a subset", summary)
        self.assertNotIn("a different image set", summary)
        with open(os.path.join(out, "first-2-images", "per_image.csv")) as f:
            self.assertNotIn("c.png", f.read())  # the third image is left out
