"""Exceptions raised by tfc_inference.

Every failure a user can cause (bad image, bad bitstream, missing or mismatched model) raises a subclass of
:class:`TFCInferenceError`, so callers can catch one type and the CLI can print one line and exit non-zero.
"""


class TFCInferenceError(Exception):
    """Base class of every error tfc_inference raises on bad input."""


class ImageError(TFCInferenceError):
    """The input is not an image we can code (unreadable file, wrong dtype, shape or mode)."""


class UnsupportedImageModeError(ImageError):
    """The image mode (e.g. RGBA with transparency, 16-bit) cannot be coded without losing information."""


class BitstreamError(TFCInferenceError):
    """A compressed file cannot be decoded."""


class NotATFCIFileError(BitstreamError):
    """The bytes do not start with the tfc_inference magic number."""


class UnsupportedVersionError(BitstreamError):
    """The container format version is not one this release can read."""


class TruncatedBitstreamError(BitstreamError):
    """The file ends before the container says it should."""


class CorruptBitstreamError(BitstreamError):
    """The file's checksum or structure is inconsistent: it was damaged after writing."""


class DecodeTimeoutError(CorruptBitstreamError):
    """The range decoder did not finish in time: the stream is malformed (crafted or altered with a valid checksum).

    TFC's range decoder can loop forever on such input (its escape-code reader never ends once the stream is
    exhausted); the decode is abandoned, but its thread keeps one CPU core busy until the process exits, so
    services should decode untrusted files in a worker process.
    """


class EntropyModelMismatchError(BitstreamError):
    """The file is intact, but this decoder's entropy models (probability tables or the scale indexes computed
    from the hyper-latents) differ from the encoder's, so the range decoder would return garbage.

    Typical cause: different floating point numerics (another CPU, a GPU, other TensorFlow / oneDNN settings).
    """


class ImageTooLargeError(ImageError):
    """The image (or the size a file declares) exceeds the stated pixel limit."""


class ImageConversionWarning(UserWarning):
    """The input image was converted with a loss of information (16-bit samples reduced to 8 bits)."""


class InexactDecodeWarning(UserWarning):
    """The entropy decoding was exact but the decoded image is not bit-identical to the encoder's reconstruction
    (the synthesis transform ran on different floating point numerics)."""


class ModelError(TFCInferenceError):
    """A model could not be found or loaded."""


class ModelNotFoundError(ModelError):
    """No checkpoint with the given name or path exists."""


class ModelMismatchError(ModelError, BitstreamError):
    """The file was written by a different model (name or weights fingerprint) than the one given."""


class TrainingError(TFCInferenceError):
    """Training cannot start (no images, bad options, incompatible checkpoint)."""


class RunInUseError(TrainingError):
    """Another process is training the same run folder (two writers would overwrite each other's checkpoints)."""


class TrainingDivergedError(TrainingError):
    """The training loss became non-finite (NaN or inf), or a checkpoint holds non-finite weights.

    The weights of the failing step are never saved, so the run's last checkpoint is the last good state.
    """

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step
