"""Tests of the temperature schedules."""
import numpy as np
import tensorflow as tf

from tests import helpers

from tfc_inference import schedules


class ScheduleTest(helpers.TestCase):

    def test_paper_formula(self):
        t = np.arange(0, 4000, 7)
        s = schedules.paper(1e-3)
        expected = np.minimum(0.5, np.exp(-1e-3 * t))
        self.assertAllClose(s.numpy(t), expected, rtol=1e-6)
        self.assertAllClose([float(s(int(k))) for k in t[::50]], expected[::50], rtol=1e-5)

    def test_improved(self):
        s = schedules.improved()
        self.assertAllClose(s.numpy([0, 350, 700]), [0.5, 0.5, 0.5])
        self.assertNear(float(s(2000)), 0.5 * np.exp(-1.3), 1e-6)
        self.assertNear(float(s.numpy(2000)), 0.136, 1e-3)
        self.assertTrue(np.all(np.diff(s.numpy(np.arange(0, 5000))) <= 0))

    def test_floor_and_get(self):
        s = schedules.ExponentialSchedule(tau0=0.5, rate=1.0, t0=0.0, tau_min=1e-3)
        self.assertNear(float(s(100)), 1e-3, 1e-9)
        self.assertIs(schedules.get(s), s)
        self.assertEqual(schedules.get(None), schedules.improved())
        with self.assertRaises(ValueError):
            schedules.get("cosine")

    def test_improved_stretches_to_budget(self):
        self.assertEqual(schedules.get("improved", 2000), schedules.improved())
        short = schedules.get("improved", 500)
        self.assertAllClose(short.numpy([0, 175]), [0.5, 0.5])
        self.assertNear(float(short.numpy(500)), float(schedules.improved().numpy(2000)), 1e-6)
        self.assertEqual(schedules.get("paper", 500), schedules.paper())
