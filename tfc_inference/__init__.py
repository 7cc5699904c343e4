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

from tfc_inference.errors import *  # noqa: E402,F401,F403
from tfc_inference.codec import (compress, decompress, decompress_details, read_header,  # noqa: E402,F401
                                 CompressResult, DecompressResult)
from tfc_inference.zoo import list_models, load_model, save_checkpoint  # noqa: E402,F401

__version__ = "0.1.0"

ASSETS_DIR = _os.path.join(_os.path.dirname(__file__), "assets")
DEMO_IMAGE = _os.path.join(ASSETS_DIR, "kodim23.png")
