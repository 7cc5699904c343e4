"""Collection order for the parallel test run (`pytest -n 2 --dist loadscope`).

pytest-xdist hands whole TestCase classes to its workers in collection order.
Alphabetical order puts several of the slowest classes (test_reliability,
test_train) last, so one worker ended the run alone for minutes. Sending the
slowest classes first (longest-job-first) lets the many short classes fill
in the gaps at the end. The list holds the slowest classes of
`pytest --durations=60` on the 2-core CI machine, slowest first; a class not
listed keeps its place after them. The order of tests inside a class is kept.
"""

from __future__ import annotations

import pytest

SLOWEST_CLASSES_FIRST = (
    "test_inference.py::InferenceTest",
    "test_cli.py::CLITest",
    "test_reliability.py::DeterminismTest",
    "test_train.py::ContinueTest",
    "test_benchmark.py::BenchmarkTest",
    "test_presets.py::PresetTest",
    "test_bits_back.py::BitsBackTest",
    "test_train.py::ResumeTest",
    "test_bits_back.py::FreshProcessDecodeTest",
    "test_train.py::DivergenceTest",
    "test_train.py::MixedPrecisionTest",
    "test_shipped_checkpoint.py::EveryShippedModelTest",
)


def _class_rank(item: pytest.Item) -> int:
  """Position of the item's class in SLOWEST_CLASSES_FIRST, else after all."""
  module_and_class = "::".join(item.nodeid.split("/")[-1].split("::")[:2])
  try:
    return SLOWEST_CLASSES_FIRST.index(module_and_class)
  except ValueError:
    return len(SLOWEST_CLASSES_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  # A stable sort keeps the collection order within each rank.
  items.sort(key=_class_rank)
