"""tfc_inference: better encoders for trained neural image codecs (Yang, Bamler & Mandt, NeurIPS 2020).

The decoder of a trained hyperprior codec stays fixed; the encoder infers better latents per image:
amortized (the encoder networks), iterative (SGA and its alternatives) and, with bits-back models,
lossy bits-back coding.  Built on TensorFlow Compression (TFC).

Typical use::

    import tfc_inference as tfci
    model = tfci.load_model("hyperprior-mse-0.01")
    result = tfci.compress(model, "photo.png", method="sga")
    image = tfci.decompress(result.data)
"""
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # silence TF start-up noise
# One op at a time (each op still uses every intra-op thread).  TF 2.14's oneDNN kernels corrupt the heap when two
# of them run at once in a fresh process (a batch matmul of the deep factorized prior beside a transposed
# convolution's backprop: ~3% of fresh-process bits-back decodes aborted or segfaulted with the default 2 inter-op
# threads here, none with 1).  TF reads this when its runtime starts, so it works unless TF already ran an op;
# set TF_NUM_INTEROP_THREADS yourself to override.  Numerics do not depend on it: files stay compatible.
_os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
# TF's pooling (BFC) allocator for CPU tensors instead of plain malloc: glibc serves each large tensor (a 1200x1200
# image's 64-channel activations are ~370 MB) with a fresh mmap and returns it with munmap, so every SGA step
# faults its pages in again.  Measured on a 2-core AMD EPYC (THP madvise): 20 SGA steps on 1216x1216 took 43 s
# user + 26 s system CPU with malloc, 42 s + 0.2 s with BFC.  Like the line above, it only counts before TF's first
# allocation; allocation never changes a result.
_os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from tfc_inference.errors import *  # noqa: E402,F401,F403
from tfc_inference.codec import (compress, decompress, decompress_details, read_header,  # noqa: E402,F401
                                 CompressResult, DecompressResult)
from tfc_inference.zoo import list_models, load_model, save_checkpoint  # noqa: E402,F401

__version__ = "0.1.0"

ASSETS_DIR = _os.path.join(_os.path.dirname(__file__), "assets")
DEMO_IMAGE = _os.path.join(ASSETS_DIR, "kodim23.png")
