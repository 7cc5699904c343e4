"""Export a trained codec as a TensorFlow SavedModel with ``compress`` and ``decompress`` functions.

The SavedModel does amortized inference and range coding with exactly the arithmetic of
:func:`tfc_inference.codec.compress` (``method="amortized"``): its streams are byte-identical to the z and y streams
inside a ``.tfci`` file, and its decoded image equals :func:`tfc_inference.codec.decompress`'s.  It carries the
raw streams only (no ``.tfci`` container), so serving code can store them in whatever format it likes.

Loading needs only TensorFlow and TensorFlow Compression (importing ``tensorflow_compression`` registers the
range-coding ops the graphs use)::

    import tensorflow as tf
    import tensorflow_compression  # noqa: F401
    loaded = tf.saved_model.load("exported/")
    z_string, y_string, shape = loaded.compress(image)        # image: uint8 [H, W, 3]
    image = loaded.decompress(z_string, y_string, shape)      # uint8 [H, W, 3]

The same functions are also exported as the serving signatures ``compress`` (input ``image``; outputs
``z_string``, ``y_string``, ``image_shape``) and ``decompress`` (inputs ``z_string``, ``y_string``,
``image_shape``; output ``image``).  ``tfc_inference_export.json`` beside the SavedModel records the model's name,
weights fingerprint and configuration.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Union

import tensorflow as tf

from tfc_inference.models import Z_STRIDE

#: Written beside ``saved_model.pb``: which model the SavedModel was exported from.
INFO_FILE = "tfc_inference_export.json"


def _pad_edge(x: tf.Tensor, multiple: int) -> tf.Tensor:
    """Edge-replicates the bottom rows and right columns of x [H, W, C] up to multiples of ``multiple``.

    Same result as ``np.pad(x, ..., mode="edge")`` in :func:`tfc_inference.codec.pad_to_multiple`: the padded
    row (column) i takes the values of row (column) min(i, H - 1).
    """
    shape = tf.shape(x)
    height, width = shape[0], shape[1]
    padded_height = (height + multiple - 1) // multiple * multiple
    padded_width = (width + multiple - 1) // multiple * multiple
    rows = tf.minimum(tf.range(padded_height), height - 1)
    cols = tf.minimum(tf.range(padded_width), width - 1)
    return tf.gather(tf.gather(x, rows, axis=0), cols, axis=1)


class ExportedCodec(tf.Module):
    """A ``tf.Module`` wrapping a model's amortized encoder, its decoder and its range coders.

    Only the model's variables are tracked; the range-coding tables of the (stateless) coders are captured by the
    traced graphs as constants.
    """

    def __init__(self, model, name: str = "tfc_inference_codec"):
        super().__init__(name=name)
        if getattr(model, "_z_coder", None) is None:
            model.prepare_coders()
        # Track the weights, so the SavedModel stores them, but not the Keras model itself (whose own
        # tf.functions and Keras metadata have no place in the export): the traced functions refer to it only
        # through their closures.
        self.model_variables = list(model.variables)

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
        def compress(image):
            """uint8 [H, W, 3] -> (z string [1], y string [1], int32 [2] image shape)."""
            image_shape = tf.shape(image)[:2]
            x = tf.cast(_pad_edge(image, Z_STRIDE), tf.float32)[None]
            y, z = model.encode_latents(x)
            y_hat, z_hat = model.discretize_amortized(y, z)
            z_string = model._z_coder.compress(z_hat)
            mu, index = model.coding_params(z_hat)
            y_string = model._y_coder.compress(tf.round(y_hat - mu), index)
            return z_string, y_string, image_shape

        @tf.function(input_signature=[tf.TensorSpec([1], tf.string, name="z_string"),
                                      tf.TensorSpec([1], tf.string, name="y_string"),
                                      tf.TensorSpec([2], tf.int32, name="image_shape")])
        def decompress(z_string, y_string, image_shape):
            """(z string [1], y string [1], int32 [2] image shape) -> uint8 [H, W, 3]."""
            z_shape = (image_shape + Z_STRIDE - 1) // Z_STRIDE
            z_hat = model._z_coder.decompress(z_string, z_shape)
            mu, index = model.coding_params(z_hat)
            y_hat = model._y_coder.decompress(y_string, index) + mu
            x_hat = model.synthesize(y_hat)
            x_hat = tf.cast(tf.round(tf.clip_by_value(x_hat, 0.0, 255.0)), tf.uint8)
            return x_hat[0, :image_shape[0], :image_shape[1]]

        @tf.function(input_signature=compress.input_signature)
        def compress_signature(image):
            z_string, y_string, image_shape = compress(image)
            return {"z_string": z_string, "y_string": y_string, "image_shape": image_shape}

        @tf.function(input_signature=decompress.input_signature)
        def decompress_signature(z_string, y_string, image_shape):
            return {"image": decompress(z_string, y_string, image_shape)}

        self.compress = compress
        self.decompress = decompress
        self.compress_signature = compress_signature
        self.decompress_signature = decompress_signature

    def signatures(self) -> Dict[str, Any]:
        return {"compress": self.compress_signature.get_concrete_function(),
                "decompress": self.decompress_signature.get_concrete_function()}


def export_info(model) -> Dict[str, Any]:
    """What ``tfc_inference_export.json`` records about the exported model."""
    import tfc_inference
    return {
        "model_name": getattr(model, "zoo_name", None) or "unnamed",
        "class": type(model).__name__,
        "fingerprint": model.fingerprint().hex(),
        "config": model.config.to_dict(),
        "tfc_inference_version": tfc_inference.__version__,
        "z_stride": Z_STRIDE,
        "functions": {
            "compress": "image uint8 [H, W, 3] -> (z_string string [1], y_string string [1], image_shape int32 [2])",
            "decompress": "(z_string, y_string, image_shape) -> image uint8 [H, W, 3]",
        },
    }


def export_saved_model(model, directory: Union[str, os.PathLike]) -> None:
    """Writes ``model`` (a loaded zoo model or a built model) as a SavedModel to ``directory``.

    The directory is created if needed; an existing SavedModel in it is overwritten.
    """
    directory = Path(directory)
    module = ExportedCodec(model)
    directory.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(directory), signatures=module.signatures())
    tmp = directory / (INFO_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(export_info(model), f, indent=2)
    os.replace(tmp, directory / INFO_FILE)


def read_export_info(directory: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Reads ``tfc_inference_export.json`` of an exported SavedModel."""
    with open(Path(directory) / INFO_FILE) as f:
        return json.load(f)


def load_saved_model(directory: Union[str, os.PathLike]):
    """Loads an exported SavedModel (registering TFC's range-coding ops first).

    The result has ``compress(image)`` and ``decompress(z_string, y_string, image_shape)``.
    """
    import tensorflow_compression  # noqa: F401  (registers the range coder ops used by the graphs)
    return tf.saved_model.load(os.fspath(directory))


__all__ = ["export_saved_model", "load_saved_model", "read_export_info", "ExportedCodec", "INFO_FILE"]
