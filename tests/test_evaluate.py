"""Tests of the resumable evaluation runner."""
import json
import os

from tfc_inference import evaluate
from tests import helpers


class EvaluateTest(helpers.TestCase):

    def test_records_resume_and_bits_back_accounting(self):
        folder = helpers.fresh_dir("eval_images")
        for i, (top, left) in enumerate([(0, 0), (200, 300)]):
            with open(os.path.join(folder, f"img{i}.png"), "wb") as f:
                f.write(helpers.encode_image(helpers.kodak_crop(40, 72, top, left)))
        paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
        cache = os.path.join(helpers.fresh_dir("eval_cache"), "cache.jsonl")
        model = helpers.shared_model("hyperprior", trained=True)
        records = evaluate.run(model, paths, ["amortized", "sga"], cache, iterations=4, eval_every=2,
                               progress=False)
        self.assertEqual(len(records), 4)
        for r in records:
            self.assertTrue(r["decoded_exactly"])
            self.assertGreater(r["encode_cpu_seconds"], 0.0)
            self.assertGreaterEqual(r["decode_cpu_seconds"], 0.0)
            self.assertEqual(r["bits"] % 8, 0)
            self.assertNear(r["bpp"], r["bits"] / (40 * 72), 1e-12)
            self.assertNear(r["loss"], r["estimated_bpp"] + r["lmbda"] * r["mse"], 1e-9)
        self.assertEqual([t["step"] for t in [r for r in records if r["method"] == "sga"][0]["trace"]], [0, 2, 4])
        with open(cache) as f:
            lines = f.readlines()
        # a second run finds everything in the cache; a torn last line (killed while writing) is ignored
        with open(cache, "a") as f:
            f.write('{"torn": ')
        again = evaluate.run(model, paths, ["amortized", "sga"], cache, iterations=4, eval_every=2,
                             progress=False)
        self.assertEqual([json.dumps(r, sort_keys=True) for r in again],
                         [json.dumps(r, sort_keys=True) for r in records])
        with open(cache) as f:
            self.assertEqual(len(f.readlines()), len(lines) + 1)

        bb = helpers.tiny_model("bitsback", seed=5, name="tiny-bb-eval")
        bb_records = evaluate.run(bb, paths[:1], ["bb-amortized"], cache, bbvi_iterations=5,
                                  side_info_bytes=3000, progress=False)
        r = bb_records[0]
        self.assertTrue(r["side_info_recovered"])
        self.assertEqual(r["side_info_bits"], 3000 * 8)
        self.assertEqual(r["net_bits"], r["bits"] - 3000 * 8)
        self.assertEqual((r["seconds_per_iteration"], r["bbvi_seconds_per_iteration"]), (0.0, 0.0))  # no stage ran


class PresetPlanTest(helpers.TestCase):
    """A preset's runs are their own cache keys (curves); default runs keep theirs."""

    def test_preset_keys(self):
        from tfc_inference import presets, zoo
        model = zoo.load_model(helpers.checkpoint("bitsback"))
        cache = os.path.join(helpers.fresh_dir("preset_plan"), "c.jsonl")
        paths = ["/nonexistent/a.png"]  # plan reads no image
        default_keys, _, _ = evaluate.plan(model, paths, ["sga", "sga+bb"], cache)
        fast = evaluate.with_preset("fast", iterations=2000)
        self.assertEqual(fast["iterations"], presets.get("fast").iterations)
        fast_keys, jobs, _ = evaluate.plan(model, paths, ["sga", "sga+bb"], cache, **fast)
        self.assertEqual(default_keys[1][4], "bits-back(bbvi=2000)")  # the key of existing caches
        self.assertIsNone(default_keys[1][6])
        self.assertTrue(set(default_keys).isdisjoint(fast_keys))
        sga_key, bb_key = fast_keys
        self.assertEqual((sga_key[3], sga_key[4], sga_key[6]), (fast["iterations"], fast["schedule"].name,
                                                                fast["learning_rate"]))
        self.assertIn(f"sga={fast['schedule'].name}", bb_key[4])
        self.assertEqual(bb_key[6], fast["learning_rate"])
        self.assertEqual(evaluate.with_preset(None, iterations=7), {"iterations": 7})


def _append_many(cache, worker, count, size):
    for i in range(count):
        evaluate.append_record(cache, {"worker": worker, "i": i, "pad": "x" * size})


class ShardTest(helpers.TestCase):
    """Workers sharing one cache: disjoint shares of the runs, whole lines."""

    def test_parse_shard(self):
        self.assertEqual(evaluate.parse_shard("1/3"), (1, 3))
        for bad in ("3/3", "-1/2", "1", "a/b", "0/0", ""):
            with self.assertRaises(ValueError):
                evaluate.parse_shard(bad)

    def test_shares_are_disjoint_and_do_not_depend_on_the_cache(self):
        keys = [("fp", f"img{i}.png", m, 10, None, 0, None) for i in range(7) for m in ("sga", "map")]
        jobs = [("path", k[2], 10, None, None, k[2], k) for k in keys]
        shares = [evaluate.shard_jobs(keys, jobs, (i, 3)) for i in range(3)]
        self.assertEqual(sorted(j[-1] for s in shares for j in s), sorted(keys))
        self.assertEqual(sum(len(s) for s in shares), len(jobs))
        self.assertEqual([len(s) for s in shares], [5, 5, 4])
        # a worker that starts after others finished some runs keeps the same share
        later = [j for j in jobs if j[-1][1] not in ("img0.png", "img3.png")]
        for i in range(3):
            self.assertEqual(evaluate.shard_jobs(keys, later, (i, 3)), [j for j in shares[i] if j in later])

    def test_offset_alternates_one_run_calls_between_workers(self):
        # one image and one method per model (a single-image dataset): without the offset every run is worker 0's
        calls = [[("fp", f"model{m}", "img0.png", "sga")] for m in range(6)]
        owners = []
        for offset, keys in enumerate(calls):
            jobs = [("path", "sga", 10, None, None, "sga", k) for k in keys]
            owners.append([i for i in range(2) if evaluate.shard_jobs(keys, jobs, (i, 2), offset)])
        self.assertEqual(owners, [[0], [1], [0], [1], [0], [1]])
        self.assertEqual([len(evaluate.shard_jobs(k, [("p", k[0])], (1, 2))) for k in calls], [0] * 6)

    def test_concurrent_appends_keep_whole_lines(self):
        import multiprocessing
        cache = os.path.join(helpers.fresh_dir("shard_appends"), "c.jsonl")
        with open(cache, "w") as f:
            f.write('{"torn": ')  # a record killed while writing: the next one must still start on its own line
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_append_many, args=(cache, w, 25, 150_000)) for w in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            self.assertEqual(p.exitcode, 0)
        records = evaluate.load_cache(cache)
        self.assertEqual(sorted((r["worker"], r["i"]) for r in records),
                         sorted((w, i) for w in range(3) for i in range(25)))

    def test_two_workers_share_one_cache(self):
        folder = helpers.fresh_dir("shard_images")
        for i, (top, left) in enumerate([(0, 0), (100, 200), (300, 50)]):
            with open(os.path.join(folder, f"img{i}.png"), "wb") as f:
                f.write(helpers.encode_image(helpers.kodak_crop(40, 64, top, left)))
        paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
        cache = os.path.join(helpers.fresh_dir("shard_cache"), "cache.jsonl")
        model = helpers.shared_model("hyperprior", trained=True)
        first = evaluate.run(model, paths, ["amortized"], cache, progress=False, shard=(0, 2))
        self.assertEqual([r["image"] for r in first], ["img0.png", "img2.png"])
        self.assertEqual({r["workers"] for r in first}, {2})
        self.assertEqual({r["cpu_allocator"] for r in first}, {"bfc"})  # the package's default
        second = evaluate.run(model, paths, ["amortized"], cache, progress=False, shard=(1, 2))
        self.assertEqual([r["image"] for r in second], ["img0.png", "img1.png", "img2.png"])
        self.assertEqual(len(evaluate.load_cache(cache)), 3)
        # nothing left for anyone
        keys, jobs, _ = evaluate.plan(model, paths, ["amortized"], cache)
        self.assertEqual(jobs, [])
