"""Figure S3 of the paper: the naive schedule tau(t) = min(0.5, exp(-c t)) vs the improved one that holds 0.5 for
t0 = 700 steps and then decays, for several decay rates c.

    python examples/schedules.py --out examples/results/schedules
"""
import argparse
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfc_inference import schedules  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples/results/schedules", help="output folder")
    parser.add_argument("--iterations", type=int, default=2000, help="steps shown")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t = np.arange(args.iterations + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for c, color in zip([5e-4, 1e-3, 2e-3], ["C0", "C1", "C2"]):
        ax.plot(t, schedules.paper(c).numpy(t), color=color, ls="--", label=f"naive, c = {c:g}")
        ax.plot(t, schedules.improved(rate=c).numpy(t), color=color, label=f"improved, c = {c:g}")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("temperature tau")
    ax.set_title("SGA temperature schedules (Fig. S3)")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out, "schedules.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
