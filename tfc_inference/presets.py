"""Named settings of the iterative encoder (SGA): ``paper``, ``best`` and ``fast``.

A preset fixes the step budget, the temperature schedule, the rounding distribution and the learning rate of
stochastic Gumbel annealing; everything else (seed, progress bar, ...) stays the caller's.  They were chosen by
measurement: a screening of the candidates on 256x256 crops (``examples/results/iterations_screening/``), then
the candidates that survived on full Kodak images at two zoo lambdas, true R-D loss of real files
(``examples/iterations_study.py``; ``examples/results/iterations_study/README.md`` ranks every candidate and
states how many runs each has).

* ``paper``: exactly the paper's SGA: 2000 Adam steps at lr 0.005, tau(t) = min(0.5, exp(-0.001 t)), the
  atanh-based rounding probabilities.
* ``best``: the lowest final loss at 2000 steps: cosine rounding probabilities (SGA+), a hot warm-up (tau 1 for
  200 steps, then decaying at 0.002) and 8x the paper's learning rate (0.04).  Measured on kodim01-06 with
  hyperprior-mse-0.005 and -0.02 (12 runs): final true R-D loss -1.46% vs ``paper`` (-0.87% / -2.05% per model),
  lower on all 12 runs; BD-rate -3.2% vs ``paper``, -35.6% vs amortized.  Chosen on the screening crops (mean
  final loss vs ``paper``: -1.95%; the same at lr 0.02: -1.44%, at lr 0.01: -0.83%; the official code's schedule
  at lr 0.01: -0.67%; at the paper's lr 0.005 every candidate's mean was within 0.3% of ``paper``).
* ``fast``: 500 steps: cosine rounding probabilities (SGA+), a hot, short warm-up (tau 1 for 50 steps, then
  decaying at 0.008) and a large learning rate (0.04).  Measured on kodim01-06 with hyperprior-mse-0.005 and
  -0.02 (12 runs): final true R-D loss +0.055% vs ``paper`` at 2000 steps (+0.28% / -0.17% per model; BD-rate
  +0.6%), in a quarter of the steps.  At the paper's learning rate every 500-step candidate stayed 2-3% above.
  Being within 0.5% of ``paper``, it is the CLI's default for ``compress --method sga``.

The Python API's default for ``sga`` without a preset stays the official code's settings (the ``improved``
schedule at lr 0.005, 2000 steps), which the Kodak evaluation's main curves use.

    >>> codec.compress(model, image, method="sga", preset="fast")
    $ tfc-inference compress image.png --method sga --preset fast
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from tfc_inference import schedules


@dataclasses.dataclass(frozen=True)
class Preset:
    """SGA settings by name; :meth:`options` gives the keyword arguments of the inference methods."""

    name: str
    iterations: int
    schedule: schedules.ExponentialSchedule
    learning_rate: float = 0.005
    rounding: str = "atanh"
    three_class: bool = False
    summary: str = ""

    def settings(self) -> Dict[str, Any]:
        """The preset as plain values: iterations, schedule, learning rate, the rounding distribution's name
        (None for the paper's ``atanh``) and ``three_class`` (the evaluation runner's options)."""
        return {"iterations": self.iterations, "schedule": self.schedule, "learning_rate": self.learning_rate,
                "rounding": None if self.rounding == "atanh" else self.rounding, "three_class": self.three_class}

    def options(self) -> Dict[str, Any]:
        """Options for ``codec.compress`` (``sga``, ``sga+bb``) / ``inference.infer``; the rounding options only
        when they are not the paper's (the defaults)."""
        out = self.settings()
        if out["rounding"] is None and not self.three_class:
            del out["rounding"], out["three_class"]
        else:
            from tfc_inference import rounding
            out["rounding"] = rounding.get(self.rounding)
        return out


#: The methods whose settings a preset gives (bits-back's SGA stage included).
METHODS = ("sga", "sga+bb")

PRESETS: Dict[str, Preset] = {p.name: p for p in [
    Preset("paper", 2000, schedules.paper(), summary="the paper's SGA (2000 steps, tau = min(0.5, exp(-0.001 t)))"),
    Preset("best", 2000, schedules.improved(tau0=1.0, rate=2e-3, t0=200.0), learning_rate=0.04, rounding="cosine",
           summary="2000 steps, cosine rounding, tau 1 for 200 steps then exp decay 0.002, Adam lr 0.04"),
    Preset("fast", 500, schedules.improved(tau0=1.0, rate=8e-3, t0=50.0), learning_rate=0.04, rounding="cosine",
           summary="500 steps, cosine rounding, tau 1 for 50 steps then exp decay 0.008, Adam lr 0.04"),
]}


def names() -> List[str]:
    return list(PRESETS)


def get(name: str) -> Preset:
    """The preset called ``name``; ValueError names the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def resolve(options: Dict[str, Any]) -> Dict[str, Any]:
    """Expands ``preset=NAME`` in inference options; options given explicitly win over the preset's."""
    options = dict(options)
    name = options.pop("preset", None)
    if name is None:
        return options
    return {**get(name).options(), **options}


__all__ = ["Preset", "PRESETS", "METHODS", "get", "names", "resolve"]
