"""Figures S1/S2 of the paper: SGA's rounding probabilities, and SGA on the toy objective f(x) = x^2.

S1: P(round up) as a function of the fractional part r = x - floor(x), for several temperatures tau.
S2: the SGA-relaxed objective E[f(x~)] for f(x) = x^2, x~ the Gumbel-softmax sample of x at temperature tau
    (Monte-Carlo average of many samples), approaching the discrete objective round(x)^2 as tau -> 0.

    python examples/toy_sga.py --out examples/results/toy_sga
"""
import argparse
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfc_inference import discretize  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples/results/toy_sga", help="output folder")
    parser.add_argument("--samples", type=int, default=2000, help="Monte-Carlo samples per x")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    taus = [1.0, 0.5, 0.2, 0.05, 0.01]

    r = np.linspace(0.001, 0.999, 500).astype(np.float32)
    fig, ax = plt.subplots(figsize=(5, 4))
    for tau in taus:
        ax.plot(r, discretize.sga_round_up_probability(tf.constant(r), tau).numpy(), label=f"tau = {tau:g}")
    ax.plot(r, r, "k:", label="linear (r)")
    ax.set_xlabel("r = x - floor(x)")
    ax.set_ylabel("P(round up)")
    ax.set_title("SGA rounding probability (Fig. S1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "rounding_probability.png"), dpi=120)

    x = np.linspace(-2.5, 2.5, 401).astype(np.float32)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, x ** 2, "k:", label="f(x) = x^2")
    ax.plot(x, np.round(x) ** 2, "k-", lw=2, label="f(round(x))")
    u = tf.constant(np.repeat(x[None], args.samples, axis=0))
    for i, tau in enumerate(taus[1:]):
        samples = discretize.SGA()(u, 0.0, tau, tf.constant([0, i])).numpy()
        ax.plot(x, np.mean(samples ** 2, axis=0), label=f"SGA, tau = {tau:g}")
    ax.set_xlabel("x")
    ax.set_ylabel("E[f(x~)]")
    ax.set_title("SGA objective for f(x) = x^2 (Fig. S2)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "toy_objective.png"), dpi=120)
    print(f"wrote {args.out}/rounding_probability.png and {args.out}/toy_objective.png")


if __name__ == "__main__":
    main()
