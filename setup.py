"""Packaging of tfc_inference.  Development install: ``pip install -e ".[test]"``.

In an editable (or source) install the model zoo finds the repository's ``checkpoints/`` folder beside the
package; a regular install finds models through ``$TFC_INFERENCE_CHECKPOINTS`` or ``./checkpoints``.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    # Parse instead of importing: importing the package imports TensorFlow.
    with open(os.path.join(HERE, "tfc_inference", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', f.read(), re.MULTILINE)
    if not match:
        raise RuntimeError("cannot find __version__ in tfc_inference/__init__.py")
    return match.group(1)


def read_long_description() -> str:
    path = os.path.join(HERE, "README.md")
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


setup(
    name="tfc_inference",
    version=read_version(),
    description="Improving Inference for Neural Image Compression (Yang, Bamler & Mandt, NeurIPS 2020) "
                "on TensorFlow Compression",
    long_description=read_long_description(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfc_inference*"]),
    package_data={"tfc_inference": ["assets/*.png", "assets/rd/*.md", "assets/rd/*/*/*.csv", "assets/rd/*/*/*.json",
                                     "assets/rd/*/*/*/*.txt"]},
    include_package_data=False,
    install_requires=[
        "tensorflow>=2.14,<2.15",
        "tensorflow-compression==2.14.1",
        "tensorflow-probability>=0.22,<0.23",
        "keras>=2.14,<2.15",
        "numpy>=1.24,<2",
        "pillow",
        "constriction>=0.5,<0.6",
        "tqdm",
        "scipy",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "bjontegaard", "matplotlib"],
        "examples": ["matplotlib", "imagecodecs<2025", "bjontegaard"],
    },
    entry_points={"console_scripts": ["tfc-inference = tfc_inference.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Multimedia :: Graphics",
    ],
)
