"""The Kodak protocol (``examples/kodak.py``) on Tecnick, or on the unsplash1200 stand-in.

    python examples/tecnick.py --list                          # the Tecnick images here (1 of the 100 offline)
    python examples/tecnick.py --images /data/tecnick/rgb      # the full TESTIMAGES 1200x1200 set, if you have it
    python examples/tecnick.py --unsplash1200 --list           # 12 photographs of Tecnick's size and kind

``--unsplash1200`` reads ``../shared/data/unsplash1200``, labels every result with that name (results go to
``examples/results/unsplash1200/``) and shows the *Tecnick* published curves beside it for scale; they are a
different image set. Every other option is the Kodak script's (``--help``).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kodak  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
    if "--unsplash1200" in argv:
        argv.remove("--unsplash1200")
        return kodak.main(argv, dataset="unsplash1200", images=os.path.join(kodak.SHARED, "unsplash1200"),
                          ablation_count=3, published="tecnick", ablation_lambdas="0.005,0.02")
    return kodak.main(argv, dataset="tecnick", images=os.path.join(kodak.SHARED, "tecnick"), ablation_count=3,
                      published="tecnick", ablation_lambdas="0.005,0.02")


if __name__ == "__main__":
    sys.exit(main())
