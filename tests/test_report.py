"""Tests of the report: BD-rates, per-image aggregation, CompressAI layout, written files, CLI errors."""
import contextlib
import csv
import io
import json
import os

import numpy as np

from tfc_inference import baselines, cli, report
from tests import helpers

SHARED_RD = "/work/shared/data/rd"


def _record(model, image, bpp, psnr, method="amortized", fingerprint=None, lmbda=None, its=0, **extra):
    """A hand-made evaluate record (only the fields the report reads)."""
    lmbda = lmbda if lmbda is not None else float(model.rsplit("-", 1)[1])
    mse = 255.0 ** 2 / 10 ** (psnr / 10)
    rec = dict(model=model, fingerprint=fingerprint or f"fp-{model}", image=image, method=method,
               discretizer=method, iterations=its, schedule=None if not its else "improved", seed=0,
               learning_rate=None if not its else 0.005, lmbda=lmbda, bits=int(bpp * 1000), bpp=bpp,
               estimated_bpp=bpp * 0.99, mse=mse, psnr=psnr, ms_ssim=None, encode_seconds=1.0,
               decode_seconds=0.5, seconds_per_iteration=0.01 if its else 0.0, decoded_exactly=True)
    rec.update(extra)
    return rec


def _curve_records(lambdas, images, rate_scale=1.0, psnr_shift=0.0, method="amortized", its=0,
                   family="hyperprior-mse"):
    """Records of a synthetic family: bpp grows with lambda, PSNR = 30 + 4 log2(bpp / 0.25) per image."""
    recs = []
    for lmbda in lambdas:
        for i, image in enumerate(images):
            bpp = 0.25 * (lmbda / 0.01) ** 0.6 * (1 + 0.1 * i)
            psnr = 30 + 4 * np.log2(bpp / 0.25) - i
            recs.append(_record(f"{family}-{lmbda:g}", image, bpp * rate_scale, psnr + psnr_shift, method=method,
                                its=its))
    return recs


LAMBDAS = (0.0025, 0.005, 0.01, 0.02, 0.04)
IMAGES = ("a.png", "b.png", "c.png")
#: as many images as the published Kodak curves average: only then are those curves BD-rate anchors
KODAK = tuple(f"kodim{i:02d}.png" for i in range(1, 25))


class BDRateTest(helpers.TestCase):

    def test_self_is_zero_and_ten_percent_less_rate_is_minus_ten(self):
        bpp = np.array([0.1, 0.2, 0.4, 0.8, 1.2])
        psnr = np.array([27.0, 29.5, 32.0, 35.0, 37.0])
        self.assertNear(report.bd_rate(bpp, psnr, bpp, psnr).value, 0.0, 1e-9)
        self.assertNear(report.bd_rate(bpp, psnr, 0.9 * bpp, psnr).value, -10.0, 1e-6)
        self.assertNear(report.bd_rate(bpp, psnr, 1.2 * bpp, psnr).value, 20.0, 1e-6)
        # a better curve (higher PSNR at the same rate) needs fewer bits
        self.assertLess(report.bd_rate(bpp, psnr, bpp, psnr + 0.5).value, -5.0)
        # the order of the points does not matter
        self.assertNear(report.bd_rate(bpp[::-1], psnr[::-1], 0.9 * bpp, psnr).value, -10.0, 1e-6)

    def test_too_few_points_and_no_overlap_are_not_numbers(self):
        bpp, psnr = [0.1, 0.2, 0.4, 0.8], [27.0, 29.5, 32.0, 35.0]
        bd = report.bd_rate(bpp, psnr, bpp[:3], psnr[:3])
        self.assertIsNone(bd.value)
        self.assertEqual(str(bd), "n/a (3 points)")
        self.assertIsNotNone(report.bd_rate(bpp, psnr, bpp[:3], psnr[:3], min_points=3).value)
        self.assertEqual(str(report.bd_rate(bpp[:2], psnr[:2], bpp, psnr)), "n/a (anchor: 2 points)")
        self.assertEqual(report.bd_rate(bpp, psnr, bpp, [p + 20 for p in psnr]).note, "n/a (no overlap)")
        self.assertEqual(report.bd_rate(bpp, psnr, bpp, [27.0, 27.0, 30.0, 31.0]).note, "n/a (repeated PSNR)")
        # a dominated point (more bits, less PSNR than another) is flagged
        bd = report.bd_rate(bpp, psnr, [0.1, 0.3, 0.25, 0.8], psnr)
        self.assertIsNotNone(bd.value)
        self.assertIn("test not monotonic", bd.note)
        self.assertEqual(report.bd_rate(bpp, psnr, bpp, psnr).note, "")

    def test_paper_savings_recomputed_from_the_published_curves(self):
        rows = {(r["dataset"], r["method"]): r["bd"].value for r in report.paper_savings()}
        self.assertNear(rows[("kodak", "SGA [M1]")], -15.2, 0.05)
        self.assertNear(rows[("kodak", "SGA+BB [M2]")], -16.9, 0.05)
        self.assertNear(rows[("tecnick", "SGA [M1]")], -18.7, 0.05)
        self.assertNear(rows[("tecnick", "SGA+BB [M2]")], -20.1, 0.05)

    def test_bd_rate_within_an_interval(self):
        pub = report.published_curves("kodak")
        base, sga = pub["paper-base"].arrays(), pub["paper-sga"].arrays()
        full = report.bd_rate(*base, *sga)
        # over the whole overlap it is bjontegaard's BD-rate; an interval wider than the curves is cut to them
        self.assertNear(report.bd_rate_within(*base, *sga, *full.psnr_range).value, full.value, 1e-3)
        wide = report.bd_rate_within(*base, *sga, 0.0, 100.0)
        self.assertNear(wide.value, full.value, 1e-3)
        self.assertEqual(wide.psnr_range, full.psnr_range)
        self.assertIn("over", wide.note)
        # a constant rate ratio gives that ratio over any interval; the interval matters for real curves
        bpp, psnr = np.array([0.1, 0.2, 0.4, 0.8]), np.array([27.0, 29.5, 32.0, 35.0])
        self.assertNear(report.bd_rate_within(bpp, psnr, 0.8 * bpp, psnr, 28.0, 30.0).value, -20.0, 1e-9)
        low = report.bd_rate_within(*base, *sga, 28.0, 31.0).value
        high = report.bd_rate_within(*base, *sga, 34.0, 37.0).value
        self.assertGreater(abs(low - high), 0.5)
        self.assertEqual(report.bd_rate_within(bpp, psnr, bpp, psnr, 40.0, 45.0).note, "n/a (no overlap)")

    def test_copied_published_files_equal_the_reference_data(self):
        if not os.path.isdir(SHARED_RD):
            self.skipTest("reference data not available")
        pairs = [("mandt-lab_improving-inference/kodak/sga-psnr.csv", "mandt-lab_improving-inference/kodak/sga-psnr.csv"),
                 ("tensorflow_compression/kodak/PSNR_sRGB_RGB/bpg444.txt",
                  "tensorflow_compression/results/image_compression/kodak/PSNR_sRGB_RGB/bpg444.txt"),
                 ("compressai/kodak/bpg_444_x265_ycbcr.json", "compressai/results/image/kodak/bpg_444_x265_ycbcr.json")]
        for mine, theirs in pairs:
            with open(os.path.join(baselines.ASSETS_RD, mine), "rb") as a, open(os.path.join(SHARED_RD, theirs),
                                                                                 "rb") as b:
                self.assertEqual(a.read(), b.read(), mine)


class AggregationTest(helpers.TestCase):

    def test_bits_back_rate_is_net_only_if_the_side_information_came_back(self):
        rec = dict(bpp=0.30, net_bpp=0.25, mse=10.0, side_info_recovered=True)
        self.assertEqual(report.rate(rec), 0.25)
        self.assertNear(report.rd_loss(rec, 0.01), 0.35, 1e-12)
        rec["side_info_recovered"] = False  # not carried for free: the whole file is charged
        self.assertEqual(report.rate(rec), 0.30)
        self.assertNear(report.rd_loss(rec, 0.01), 0.40, 1e-12)
        self.assertEqual(report.rate(dict(bpp=0.30)), 0.30)

    def test_per_image_means_partial_points_and_superseded_weights(self):
        recs = _curve_records(LAMBDAS[:2], IMAGES)
        # PSNR is averaged per image, not computed from the mean MSE
        recs[0]["psnr"], recs[1]["psnr"], recs[2]["psnr"] = 20.0, 30.0, 40.0
        # an older fingerprint of the same model name is ignored
        old = _record("hyperprior-mse-0.005", "a.png", 9.0, 10.0, fingerprint="old")
        recs.insert(0, old)
        # a partial point: one image only
        recs.append(_record("hyperprior-mse-0.02", "a.png", 0.5, 33.0))
        curves = report.learned_curves(recs)
        self.assertEqual(list(curves), ["hyperprior-mse amortized"])
        c = curves["hyperprior-mse amortized"]
        by_model = {p["model"]: p for p in c.points}
        p = by_model["hyperprior-mse-0.0025"]
        self.assertEqual(p["n"], 3)
        self.assertNear(p["psnr"], 30.0, 1e-12)
        self.assertNear(p["bpp"], np.mean([r["bpp"] for r in recs[1:4]]), 1e-12)
        self.assertNear(by_model["hyperprior-mse-0.005"]["bpp"],
                        np.mean([r["bpp"] for r in recs[4:7]]), 1e-12)
        self.assertEqual([q["model"] for q in c.complete(list(IMAGES))],
                         ["hyperprior-mse-0.0025", "hyperprior-mse-0.005"])
        self.assertEqual(by_model["hyperprior-mse-0.02"]["n"], 1)

    def test_bits_back_uses_net_rate_and_iterations_make_their_own_curve(self):
        recs = [_record("bitsback-mse-0.01", "a.png", 2.0, 30.0, method="sga+bb", its=2000, net_bpp=0.3),
                _record("bitsback-mse-0.01", "a.png", 2.0, 30.0, method="sga+bb", its=500, net_bpp=0.32)]
        curves = report.learned_curves(recs)
        self.assertEqual(len(curves), 2)
        self.assertEqual(sorted(p["bpp"] for c in curves.values() for p in c.points), [0.3, 0.32])
        labels = [c.label for c in curves.values()]
        self.assertIn("M2 SGA+BB [bitsback-mse, 2000 its]", labels)

    def test_baseline_points_average_over_images(self):
        recs = [dict(codec="jpeg", method="jpeg", settings="s", level=50.0, image=im, bpp=b, psnr=p, ms_ssim=m)
                for im, b, p, m in [("a", 1.0, 30.0, 0.9), ("b", 2.0, 32.0, None)]]
        curves = report.baseline_curves(recs)
        (c,) = curves.values()
        self.assertEqual(c.points[0]["bpp"], 1.5)
        self.assertEqual(c.points[0]["psnr"], 31.0)
        self.assertIsNone(c.points[0]["ms_ssim"])  # not every image has MS-SSIM


class WriteTest(helpers.TestCase):

    def _cache(self, records):
        path = os.path.join(helpers.fresh_dir("report_cache"), "cache.jsonl")
        with open(path, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        return path

    def test_points_on_some_images_are_not_set_against_the_anchors(self):
        # PSNRs within the published BPG curve's range; SGA on 2 of the 24 images at one lambda, on all at another
        recs = _curve_records(LAMBDAS, KODAK, psnr_shift=12.0)
        sga = _curve_records(LAMBDAS[1:3], KODAK, rate_scale=0.9, psnr_shift=12.0, method="sga", its=20)
        recs += [r for r in sga if r["lmbda"] == LAMBDAS[2] or r["image"] in KODAK[:2]]
        out = helpers.fresh_dir("report_points")
        report.write(recs, out, "kodak", allow_partial=True)
        with open(os.path.join(out, "points.csv")) as f:
            points = {(r["curve"], r["model"]): r for r in csv.DictReader(f)}
        some, full = (points[("M1 SGA [hyperprior-mse, 20 its]", f"hyperprior-mse-{lmbda:g}")]
                      for lmbda in LAMBDAS[1:3])
        self.assertEqual((some["complete"], some["images"], some["rate_vs_bpg_equal_psnr_pct"]), ("False", "2", ""))
        self.assertEqual(full["complete"], "True")
        self.assertLess(float(full["rate_vs_bpg_equal_psnr_pct"]), 0.0)

    def test_report_files_bd_table_ablation_and_compressai_layout(self):
        recs = _curve_records(LAMBDAS, KODAK)
        recs += _curve_records(LAMBDAS, KODAK, rate_scale=0.9, method="sga", its=20)
        recs += _curve_records(LAMBDAS[1:3], KODAK[:2], rate_scale=0.95, method="map", its=20)
        for r, cpu in zip([r for r in recs if r["method"] == "sga"], [3.0, 5.0, 4.0]):
            r["encode_cpu_seconds"] = cpu  # older records have no CPU time: the median is over the three that do
        recs[0].update(machine="m", tf_threads=1, workers=2, cpu_allocator="bfc")
        recs.append(dict(codec="jpeg", method="jpeg", settings="s", level=50.0, image=KODAK[0], bpp=1.0, psnr=30.0,
                         ms_ssim=None))
        out = helpers.fresh_dir("report_out")
        rep = report.write(recs, out, "kodak", caches=["cache.jsonl"])
        for name in ("summary.md", "points.csv", "bd_rates.csv", "ablation.csv", "rate_gap.csv",
                     "paper_savings.csv", "paper_comparison.csv", "rd.png", "bd_vs_bpg.png", "ablation.png"):
            self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
            self.assertIn(name, rep.files)
        rows = {r["curve"]: r for r in report.bd_table(rep)}
        sga = rows["M1 SGA [hyperprior-mse, 20 its]"]
        self.assertNear(sga["vs M3"].value, -10.0, 1e-6)
        self.assertNear(sga["vs own amortized"].value, -10.0, 1e-6)
        self.assertNear(sga["vs M3, estimated rates"].value, -10.0, 1e-6)
        self.assertIsNotNone(sga["vs BPG"].value)
        self.assertEqual(str(rows["A1 MAP [hyperprior-mse, 20 its]"]["vs M3"]), "n/a (0 points)")
        abl = {r["code"]: r for r in report.ablation_table(rep)}
        self.assertNear(abl["M1"]["bd"].value, -10.0, 1e-6)
        self.assertEqual(abl["A1"]["images"], 2)
        self.assertEqual(str(abl["A1"]["bd"]), "n/a (2 points)")
        # per-lambda R-D loss vs M3 on the same two images: only the rate term changes (x0.95)
        base = [r for r in recs if r["method"] == "amortized" and r["lmbda"] == LAMBDAS[1] and r["image"] in KODAK[:2]]
        expect = np.mean([0.95 * r["bpp"] + r["lmbda"] * r["mse"] for r in base]) / np.mean(
            [r["bpp"] + r["lmbda"] * r["mse"] for r in base]) - 1
        self.assertNear(dict(abl["A1"]["loss_change"])[LAMBDAS[1]], 100 * expect, 1e-6)
        with open(os.path.join(out, "summary.md")) as f:
            summary = f.read()
        self.assertIn("**Not yet run:** SGA+BB [M2]", summary)
        # where each curve was measured: _record sets no machine, so every record counts as "not recorded"
        machines = {r["curve"]: r for r in report.machines_table(rep)}
        self.assertEqual(machines["M1 SGA [hyperprior-mse, 20 its]"]["records"], len(LAMBDAS) * len(KODAK))
        self.assertIn("| M1 SGA [hyperprior-mse, 20 its] | not recorded | ? x ? | 120 | 0.010 | 1.0 | 4.0 (3) |",
                      summary)
        self.assertEqual(machines["M3 amortized [hyperprior-mse]"]["cpu_records"], 0)
        # a record's CPU allocator, where recorded, sets it apart (malloc costs SGA far more CPU time than BFC)
        self.assertIn("| M3 amortized [hyperprior-mse] | m | 1 x 2, bfc | 1 |", summary)
        # per image: SGA's rate is 0.9x at the same PSNR, so its loss change is known for each image and lambda
        columns, rows = report.per_image_table(rep)
        self.assertEqual(columns, ["M1 SGA [hyperprior-mse, 20 its]"])
        for row in rows:
            base = [r for r in recs if r["method"] == "amortized" and r["image"] == row["image"]]
            expect = np.mean([100 * ((0.9 * r["bpp"] + r["lmbda"] * r["mse"]) / (r["bpp"] + r["lmbda"] * r["mse"]) - 1)
                              for r in base])
            self.assertNear(row[columns[0]][0], expect, 1e-6)
            self.assertEqual(row[columns[0]][1], len(LAMBDAS))
        self.assertIn("per_image.csv", rep.files)
        self.assertIn("-15.2%", summary)
        with open(os.path.join(out, "compressai", "hyperprior-mse_sga_20its_improved_lr0.005.json")) as f:
            data = json.load(f)
        self.assertEqual(sorted(data)[:3], ["description", "name", "results"])
        self.assertEqual(len(data["results"]["bpp"]), 5)
        for key in ("bpp", "psnr-rgb", "ms-ssim-rgb"):
            self.assertEqual(len(data["results"][key]), 5)
        loaded = baselines.load_compressai_json(os.path.join(out, "compressai",
                                                             "hyperprior-mse_sga_20its_improved_lr0.005.json"))
        self.assertEqual(loaded["results"]["psnr-rgb"], data["results"]["psnr-rgb"])

    def test_rewritten_report_drops_what_it_no_longer_draws(self):
        out = helpers.fresh_dir("report_rewrite")
        sga = lambda images: _curve_records(LAMBDAS, images, rate_scale=0.9, method="sga", its=20)
        first = report.write(_curve_records(LAMBDAS, KODAK) + sga(KODAK), out, "kodak")
        self.assertIn("bd_vs_bpg.png", first.files)
        # three images of kodak: BPG is no anchor, and there is no SGA curve any more
        second = report.write(_curve_records(LAMBDAS, IMAGES), out, "kodak")
        self.assertNotIn("bd_vs_bpg.png", second.files)
        self.assertFalse(os.path.exists(os.path.join(out, "bd_vs_bpg.png")))
        self.assertEqual(sorted(os.path.join("compressai", n) for n in os.listdir(os.path.join(out, "compressai"))),
                         sorted(f for f in second.files if f.startswith("compressai")))
        self.assertEqual(len(os.listdir(os.path.join(out, "compressai"))), 1)
        self.assertTrue(os.path.isfile(os.path.join(out, "rd.png")))

    def test_ablation_compares_on_the_common_images_only(self):
        # SGA: 0.9x the rate on a.png and b.png at every lambda, plus c.png at one lambda with 3x the rate; the
        # ablation row must compare on a.png and b.png alone, where SGA is exactly -10%
        recs = _curve_records(LAMBDAS, IMAGES)
        recs += _curve_records(LAMBDAS, IMAGES[:2], rate_scale=0.9, method="sga", its=20)
        extra = _curve_records(LAMBDAS[:1], IMAGES, rate_scale=3.0, method="sga", its=20)
        recs += [r for r in extra if r["image"] == IMAGES[2]]
        rep = report.write(recs, helpers.fresh_dir("report_common"), "kodak", caches=["cache.jsonl"])
        (row,) = [r for r in report.ablation_table(rep) if r["code"] == "M1"]
        self.assertEqual(row["images"], 2)
        self.assertNear(row["bd"].value, -10.0, 1e-6)

    def test_paper_comparison_over_our_psnr_interval(self):
        # M1 at 2000 steps: 0.8x the base's rate; M2: 0.75x; a live JPEG2000 curve with 1.25x the base's rate
        recs = _curve_records(LAMBDAS, IMAGES) + _curve_records(LAMBDAS, IMAGES, rate_scale=0.8, method="sga",
                                                                its=2000)
        recs += _curve_records(LAMBDAS, IMAGES, rate_scale=0.75, method="sga+bb", its=2000, family="bitsback-mse")
        recs += [dict(codec="jpeg2000", method="jpeg2000", settings="level=psnr", level=r["lmbda"], image=r["image"],
                      bpp=1.25 * r["bpp"], psnr=r["psnr"], ms_ssim=None) for r in _curve_records(LAMBDAS, IMAGES)]
        out = helpers.fresh_dir("report_paper_comparison")
        rep = report.write(recs, out, "kodak", caches=["cache.jsonl"])
        rows = {r["comparison"]: r for r in report.paper_comparison(rep)}
        pub = report.published_curves("kodak")
        for name, ours, paper_key in [("SGA [M1] vs Base Hyperprior [M3]", -20.0, "paper-sga"),
                                      ("SGA+BB [M2] vs Base Hyperprior [M3]", -25.0, "paper-sga+bb")]:
            row = rows[name]
            self.assertNear(row["ours"].value, ours, 1e-6)
            lo, hi = row["psnr_low"], row["psnr_high"]
            self.assertEqual((lo, hi), row["ours"].psnr_range)
            expect = report.bd_rate_within(*pub["paper-base"].arrays(), *pub[paper_key].arrays(), lo, hi)
            self.assertNear(row["paper_same_interval"].value, expect.value, 1e-9)
            self.assertNear(row["paper_full_range"].value, -15.2 if paper_key == "paper-sga" else -16.9, 0.05)
        j2k = rows["Base Hyperprior [M3] vs JPEG2000"]
        self.assertNear(j2k["ours"].value, -20.0, 1e-6)
        with open(os.path.join(out, "summary.md")) as f:
            summary = f.read()
        self.assertIn(f"| SGA [M1] vs Base Hyperprior [M3] | {lo:.1f}-{hi:.1f} dB | -20.0% | ", summary)
        self.assertIn("paper_comparison.csv", rep.files)

    def test_rate_gap_splits_container_bytes_from_coder_overhead(self):
        recs = _curve_records(LAMBDAS, IMAGES[:1])
        for r in recs:  # 1,000 pixels; 40 bits of container around the streams; estimate = 0.99 x rate
            r.update(height=10, width=100, payload_bits=r["bits"] - 40)
        out = helpers.fresh_dir("report_gap")
        report.write(recs, out, "kodak", caches=["cache.jsonl"])
        with open(os.path.join(out, "rate_gap.csv")) as f:
            (row,) = list(csv.DictReader(f))
        container = np.mean([100 * 0.040 / (0.99 * r["bpp"]) for r in recs])
        coder = np.mean([100 * (r["bpp"] - 0.040 - 0.99 * r["bpp"]) / (0.99 * r["bpp"]) for r in recs])
        self.assertNear(float(row["mean_container_pct"]), container, 1e-6)
        self.assertNear(float(row["mean_coder_pct"]), coder, 1e-6)
        self.assertNear(float(row["mean_container_pct"]) + float(row["mean_coder_pct"]),
                        float(row["mean_gap_pct"]), 1e-6)
        # round trips are counted, not assumed: one record whose decode differed shows as such
        self.assertEqual((row["decoded_exactly"], row["files"], row["side_info_recovered"]), ("5", "5", ""))
        recs[0]["decoded_exactly"] = False
        for r in recs[1:]:
            r["side_info_recovered"] = True
        recs[-1]["side_info_recovered"] = False
        report.write(recs, out, "kodak", caches=["cache.jsonl"])
        with open(os.path.join(out, "rate_gap.csv")) as f:
            (row,) = list(csv.DictReader(f))
        self.assertEqual((row["decoded_exactly"], row["side_info_recovered"]), ("4", "3/4"))
        with open(os.path.join(out, "summary.md")) as f:
            self.assertIn("| 4/5 | 3/4 |", f.read())
        # records without payload_bits (older caches) leave the split empty instead of guessing
        report.write(_curve_records(LAMBDAS, IMAGES[:1]), out, "kodak", caches=["cache.jsonl"])
        with open(os.path.join(out, "rate_gap.csv")) as f:
            (row,) = list(csv.DictReader(f))
        self.assertEqual(row["mean_coder_pct"], "")

    def test_cli_report_and_errors(self):
        cache = self._cache(_curve_records(LAMBDAS[:2], KODAK))
        out = os.path.join(helpers.fresh_dir("report_cli"), "kodak")

        def run(*argv):
            err, stdout = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
                code = cli.main(list(argv))
            return code, err.getvalue()

        code, err = run("report", "--cache", cache, "--out", out, "-q")
        self.assertEqual(code, 0, err)
        with open(os.path.join(out, "summary.md")) as f:
            text = f.read()
        self.assertIn("n/a (2 points)", text)
        self.assertIn(f"tfc-inference report --cache {cache} --out {out}", text)
        code, err = run("report", "--cache", cache + ".missing", "--out", out)
        self.assertEqual(code, 1)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("no such cache file", err)
        empty = self._cache([{"unrelated": 1}])
        code, err = run("report", "--cache", empty, "--out", out)
        self.assertEqual((code, err.count("\n")), (1, 1))
        self.assertIn("no evaluation records", err)
        code, err = run("report", "--cache", cache, "--out", cache)
        self.assertEqual(code, 1)
        self.assertIn("not a directory", err)
        code, _ = run("report", "--cache", cache, "--out", out, "--published", "mars")
        self.assertEqual(code, 2)
        # published curves of another image set are drawn for scale, never used as anchors
        other = os.path.join(helpers.fresh_dir("report_cli"), "unsplash1200")
        code, err = run("report", "--cache", cache, "--out", other, "--published", "tecnick", "-q")
        self.assertEqual(code, 0, err)
        with open(os.path.join(other, "summary.md")) as f:
            self.assertIn("published curves are of tecnick, a different image set", f.read())
        with open(os.path.join(other, "bd_rates.csv")) as f:
            header = f.readline()
        self.assertNotIn("vs BPG", header)
        self.assertFalse(os.path.exists(os.path.join(other, "bd_vs_bpg.png")))

    def test_subset_report_says_the_published_curves_cover_the_whole_set(self):
        recs = _curve_records(LAMBDAS, IMAGES)
        subset = report.build(recs, dataset="kodak (first 3 images)", published="kodak", subset=True)
        self.assertFalse(subset.same_set)
        self.assertTrue(subset.is_subset)
        self.assertEqual(subset.set_note, "published: all of kodak")
        # a label alone does not make a subset: all 24 images under any label are the published set's images
        full = _curve_records(LAMBDAS, KODAK)
        self.assertFalse(report.build(full, dataset="kodak (first 24 images)", published="kodak").is_subset)
        other = report.build(recs, dataset="unsplash1200", published="tecnick")
        self.assertEqual(other.set_note, "other image set: tecnick")
        self.assertTrue(report.build(full, dataset="kodak", published="kodak").same_set)
        # fewer images than the published curves average make a subset whatever the label (one Tecnick image of
        # the published 100): BPG is then no anchor
        for images, dataset in ((IMAGES, "kodak"), (IMAGES[:1], "tecnick")):
            sga = _curve_records(LAMBDAS, images, rate_scale=0.9, method="sga", its=20)
            rep = report.build(_curve_records(LAMBDAS, images) + sga, dataset=dataset)
            self.assertEqual((rep.published_set, rep.is_subset, rep.same_set), (dataset, True, False))
            self.assertEqual(rep.set_note, f"published: all of {dataset}")
            rows = {r["curve"]: r for r in report.bd_table(rep)}
            self.assertNear(rows["M1 SGA [hyperprior-mse, 20 its]"]["vs M3"].value, -10.0, 1e-6)
            self.assertNotIn("vs BPG", rows["M1 SGA [hyperprior-mse, 20 its]"])
        full_rep = report.build(full + _curve_records(LAMBDAS, KODAK, rate_scale=0.9, method="sga", its=20))
        rows = {r["curve"]: r for r in report.bd_table(full_rep)}
        self.assertIsNotNone(rows["M1 SGA [hyperprior-mse, 20 its]"]["vs BPG"].value)


class EvaluateMSSSIMTest(helpers.TestCase):

    def test_evaluate_records_ms_ssim_and_old_records_stay_valid(self):
        from tfc_inference import evaluate
        folder = helpers.fresh_dir("msssim_images")
        paths = []
        for name, (h, w) in (("big.png", (176, 192)), ("small.png", (40, 72))):
            paths.append(os.path.join(folder, name))
            with open(paths[-1], "wb") as f:
                f.write(helpers.encode_image(helpers.kodak_crop(h, w)))
        cache = os.path.join(helpers.fresh_dir("msssim_cache"), "cache.jsonl")
        model = helpers.shared_model("hyperprior")
        records = evaluate.run(model, paths, ["amortized"], cache, progress=False)
        big, small = records
        self.assertIsNone(small["ms_ssim"])
        from tfc_inference import codec
        decoded = codec.decompress(codec.compress(model, helpers.kodak_crop(176, 192)).data, model)
        self.assertNear(big["ms_ssim"], baselines.ms_ssim(helpers.kodak_crop(176, 192), decoded), 1e-6)
        # a record written before MS-SSIM existed (no field) still counts as done, and aggregates to None
        with open(cache, "w") as f:
            for r in records:
                r = dict(r)
                r.pop("ms_ssim")
                f.write(json.dumps(r) + "\n")
        _, jobs, _ = evaluate.plan(model, paths, ["amortized"], cache)
        self.assertEqual(jobs, [])
        point = report.learned_curves(evaluate.load_cache(cache))["unnamed amortized"].points[0]
        self.assertIsNone(point["ms_ssim"])


class LosslessPointTest(helpers.TestCase):

    def test_infinite_psnr_is_kept_out_of_plots_and_strict_json(self):
        recs = [dict(codec="jpeg", method="jpeg", settings="s", level=q, image="a.png", bpp=b, psnr=p, ms_ssim=None)
                for q, b, p in [(10.0, 0.2, 25.0), (50.0, 0.8, 31.0), (100.0, 8.0, float("inf"))]]
        out = helpers.fresh_dir("report_lossless")
        report.write(recs, out, "kodak")
        self.assertTrue(os.path.isfile(os.path.join(out, "rd.png")))
        (name,) = os.listdir(os.path.join(out, "compressai"))

        def refuse(constant):
            raise ValueError(constant)

        with open(os.path.join(out, "compressai", name)) as f:
            data = json.load(f, parse_constant=refuse)
        self.assertEqual(data["results"]["psnr-rgb"], [25.0, 31.0, None])
