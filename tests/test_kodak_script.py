"""Tests of the Kodak protocol script (examples/kodak.py): the order of its runs."""
from tests import helpers


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
            # the ablation comes after every main run and keeps its own subset
            self.assertEqual(max(i for i, s in enumerate(ordered) if s[0] == "main") + 1,
                             min(i for i, s in enumerate(ordered) if s[0] == "ablation"))
            self.assertEqual(sorted(p for s in ordered if s[0] == "ablation" for p in s[3]), images[:3])
