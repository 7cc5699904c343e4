"""Benchmark of the encoder loop on a Kodak-size image (thin wrapper of ``tfc-inference benchmark``).

    python examples/benchmark.py --model hyperprior-mse-0.01 --out examples/results/benchmark.md
"""
import sys

from tfc_inference.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark"] + sys.argv[1:]))
