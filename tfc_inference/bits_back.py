"""Lossy bits-back coding with a :class:`~tfc_inference.models.BitsBackHyperprior` (paper Section 3.3, Alg. 1).

The hyper-latent z is not chosen by the encoder: it is *sampled* from a Gaussian q(z | y_hat) by decoding the
caller's side information with q as the entropy model.  The decoder recovers z, then y_hat, re-derives the same q
from y_hat alone (``reproducible_bbvi``) and re-encodes z with q, which gives the side information back.  The
net cost of z is -log2 P(z) + log2 Q(z), i.e. the KL term of the ELBO instead of the cross-entropy.

**Grids.**  y_hat lives on the integers (its grid cannot depend on z, because z is sampled *given* y_hat) and is
coded with the discretized Gaussian P(k | z) = Phi((k + 1/2 - mu) / sigma) - Phi((k - 1/2 - mu) / sigma), with
(mu, sigma) = h_s(z) (continuous scale, clipped to the model's scale range).  z lives on the grid
``Z_GRID * k`` (spacing 1/4); Q(z) is q's Gaussian integrated over the grid cell and P(z) the deep factorized
prior's CDF differences over the cell.  (The log2 4 bits per element that the finer grid adds to both the z
bits and the bits back cancel in the net rate.)

**Coder.**  One stack (ANS) coder from ``constriction`` holds everything, in this order::

    encode:  stack = [pad | side information]   (sealed)
             z   <- pop    Q(z | y_hat)          (bits back: consumes side information)
             push y_hat under P(y | z)
             push z     under P(z)               (channel by channel)
    decode:  pop z under P(z); pop y_hat under P(y | z); q <- reproducible_bbvi(y_hat);
             push z under Q(z | y_hat); what remains (unsealed, minus pad) is the side information.

If the side information is shorter than what popping z consumes, it is extended at the bottom of the stack with
pseudo-random pad words (a fixed seed), whose count is stored; those bits are not side information and the net
rate counts them as cost.

**Reproducible BBVI.**  q is refit from y_hat by ``bbvi_iterations`` Adam steps (lr 0.003) on the rate
-log2 p(y_hat | z) - log2 p(z) + log2 q(z), z = m + exp(lv / 2) eps with stateless noise from a fixed seed,
starting from h_a(y_hat).  The container stores a CRC-32 of the resulting (m, log variance): a decoder on
different numerics that gets a different q still decodes the image (z and y_hat never depend on q at the
decoder) and reports that the side information cannot be recovered.

Container streams of a bits-back file: ``[meta, ans_words]`` with meta = varints (side information bytes, pad
words, BBVI iterations, seed, zigzag(min y), max y - min y), the BBVI learning rate (float32), the q checksum
(4 bytes), a flags byte (bit 0: the side information is whitened, XORed with a SHAKE-256 keystream before it
goes on the stack, so that any payload, text or zeros too, samples z fairly; bit 1: a varint nonce follows, the
keystream's nonce when the encoder redrew a z sample that fell in q's far tail) and the nonce. Files written
before the flags byte have none and are read as unwhitened.  Coding ranges are tight because constriction gives
every symbol in range a minimum probability:
y over [min y, max y] of the image, z (under both Q and P) over each channel's prior support, which also
guarantees that every z sampled from Q can be coded under P.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
import time
import zlib
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfc_inference import discretize, optim, schedules
from tfc_inference.container import encode_varint
from tfc_inference.errors import CorruptBitstreamError, TFCInferenceError

Z_GRID = 0.25
SYMBOL_MIN, SYMBOL_MAX = -(1 << 15), (1 << 15) - 1
BB_METHODS = ("sga+bb", "bb-no-sga", "bb-amortized")
DEFAULT_BBVI_LR = 0.003
PAD_SEED = 0x5EED
#: Bits that must remain on the stack after sampling z (below it, the sample drew on an exhausted stack).
MIN_VALID_BITS = 64
#: Flags byte at the end of the metadata (absent in files written before it: no flag set).
FLAG_WHITENED = 0x01
#: Flag: a varint nonce follows the flags byte (the keystream that whitened the side information).
FLAG_NONCE = 0x02
#: Redraws of a z sample that fell in q's far tail (see :func:`encode`).
MAX_NONCE = 15
#: A z element this many standard deviations of q from its grid cell is a draw from the coder's floor
#: probability, not from q (a Gaussian sample lands there with probability ~1e-15).
TAIL_SIGMAS = 8.0
_WHITENING_KEY = b"tfc_inference bits-back side information"


def whiten(data: bytes, nonce: int = 0) -> bytes:
    """XOR with a fixed keystream (SHAKE-256 of a constant and ``nonce``, the same everywhere); its own inverse.

    Bits-back decodes z *from* the side information, so z is a fair sample of q only if those bits look
    uniformly random. Text, zeros or a payload padded with zero bytes do not: decoded as they are, they bias
    the sample of z and so cost bits."""
    if not data:
        return b""
    seed = _WHITENING_KEY + (b"#%d" % nonce if nonce else b"")
    key = np.frombuffer(hashlib.shake_256(seed).digest(len(data)), np.uint8)
    return (np.frombuffer(data, np.uint8) ^ key).tobytes()


class SideInformationError(TFCInferenceError):
    """The side information cannot be recovered (the decoder's q differs from the encoder's)."""


def _constriction():
    import constriction
    return constriction


def _gaussian_model(lo: int, hi: int):
    """Discretized Gaussian over the integers lo..hi.  constriction gives every symbol of the range at least
    its smallest representable probability, so ranges are kept tight (per image for y, per channel for z):
    the mass leaked to the tails grows with the range's size."""
    return _constriction().stream.model.QuantizedGaussian(int(lo), int(hi))


def _tail_elements(z_k, mean, std) -> int:
    """How many z elements lie more than :data:`TAIL_SIGMAS` standard deviations of q from their grid cell."""
    gap = np.maximum(0.0, np.abs(z_k * Z_GRID - mean.astype(np.float64)) - Z_GRID / 2)
    return int(np.sum(gap > TAIL_SIGMAS * std))


def _pop_q(ans, table, mean, std):
    """Samples z ~ Q by decoding, channel by channel, over each channel's prior support (so every sample can
    be coded under P)."""
    z_k = np.zeros(mean.shape, np.int64)
    for ch in range(mean.shape[-1]):
        lo, hi = table.kmin[ch], table.kmin[ch] + len(table.pmfs[ch]) - 1
        z_k[..., ch] = ans.decode(_gaussian_model(lo, hi), (mean[..., ch] / Z_GRID).astype(np.float64).ravel(),
                                  (std[..., ch] / Z_GRID).astype(np.float64).ravel()).reshape(mean.shape[:-1])
    return z_k


def _push_q(ans, table, z_k, mean, std):
    """Inverse of :func:`_pop_q`."""
    for ch in reversed(range(mean.shape[-1])):
        lo, hi = table.kmin[ch], table.kmin[ch] + len(table.pmfs[ch]) - 1
        ans.encode_reverse(z_k[..., ch].ravel().astype(np.int32), _gaussian_model(lo, hi),
                           (mean[..., ch] / Z_GRID).astype(np.float64).ravel(),
                           (std[..., ch] / Z_GRID).astype(np.float64).ravel())


def _zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def _unzigzag(n: int) -> int:
    return n // 2 if n % 2 == 0 else -(n + 1) // 2


@dataclasses.dataclass
class PriorTable:
    """p(z) discretized on the Z_GRID grid, one probability vector per channel over symbols kmin..kmax."""

    kmin: np.ndarray  # [C] int
    pmfs: list  # C arrays of float64, normalized

    def bits(self, z_k: np.ndarray) -> float:
        total = 0.0
        for c in range(len(self.pmfs)):
            idx = z_k[..., c].ravel() - self.kmin[c]
            total -= np.sum(np.log2(self.pmfs[c][idx]))
        return float(total)

    def check_support(self, z_k: np.ndarray) -> None:
        for c in range(len(self.pmfs)):
            v = z_k[..., c]
            if v.min() < self.kmin[c] or v.max() >= self.kmin[c] + len(self.pmfs[c]):
                raise TFCInferenceError("a sampled hyper-latent lies outside the prior's coding range; "
                                        "use another seed or a different method")


def prior_table_arrays(table: PriorTable) -> Dict[str, np.ndarray]:
    """The table as arrays for a checkpoint's ``coding_tables.npz`` (read back by :func:`prior_table`)."""
    return {"bb_kmin": np.asarray(table.kmin, np.int64),
            "bb_lengths": np.array([len(p) for p in table.pmfs], np.int64),
            "bb_pmfs": np.concatenate(table.pmfs).astype(np.float64)}


def prior_table(model) -> PriorTable:
    """The discretized prior P(z) over each channel's support: the checkpoint's frozen table if it has one
    (identical on every machine), else built once per model from the learned prior."""
    cached = getattr(model, "_bb_prior_table", None)
    if cached is not None:
        return cached
    frozen = getattr(model, "_frozen_tables", None)
    if frozen is not None and "bb_kmin" in frozen:
        ends = np.cumsum(frozen["bb_lengths"])
        table = PriorTable(kmin=np.asarray(frozen["bb_kmin"], np.int64),
                           pmfs=[np.asarray(p, np.float64) for p in np.split(frozen["bb_pmfs"], ends[:-1])])
        model._bb_prior_table = table
        return table
    import tensorflow_compression as tfc
    prior = model.hyperprior
    # the tails' iterative search runs in one graph: ~1 s instead of ~10 s eagerly (same values, measured)
    tails = tf.function(lambda: (tfc.lower_tail(prior, 1e-9), tfc.upper_tail(prior, 1e-9)), autograph=False)
    lower, upper = (t.numpy() for t in tails())
    margin = int(math.ceil(8 * math.sqrt(model.config.max_variance) / Z_GRID))
    kmin = np.floor(lower / Z_GRID).astype(np.int64) - margin
    kmax = np.ceil(upper / Z_GRID).astype(np.int64) + margin
    channels = len(kmin)
    pmfs = []
    for c in range(channels):
        k = np.arange(kmin[c], kmax[c] + 1)
        edges = (np.concatenate([k, [k[-1] + 1]]) - 0.5) * Z_GRID
        x = np.zeros([len(edges), channels], np.float32)
        x[:, c] = edges
        cdf = prior.cdf(tf.constant(x)).numpy()[:, c].astype(np.float64)
        pmf = np.maximum(np.diff(cdf), 1e-12)
        pmfs.append(pmf / pmf.sum())
    table = PriorTable(kmin=kmin, pmfs=pmfs)
    model._bb_prior_table = table
    return table


def _q_bits(z_k, mean, std) -> float:
    """-log2 Q(z) of grid points z = Z_GRID * z_k under q's Gaussian integrated over each grid cell."""
    from scipy.stats import norm
    z = z_k * Z_GRID
    upper = norm.logcdf((z + Z_GRID / 2 - mean) / std)
    lower = norm.logcdf((z - Z_GRID / 2 - mean) / std)
    log_mass = upper + np.log1p(-np.exp(np.minimum(lower - upper, -1e-12)))
    return float(-np.sum(log_mass) / math.log(2))


class BitsBackInference:
    """The optimization stages of the bits-back encoder and the decoder's reproducible BBVI."""

    def __init__(self, model, seed: int = 0, learning_rate: float = 0.005, schedule=None,
                 iterations: int = 2000, bbvi_learning_rate: float = DEFAULT_BBVI_LR, rounding=None,
                 three_class: bool = False):
        if not hasattr(model, "q_params"):
            raise ValueError(f"bits-back coding needs a BitsBackHyperprior model, got {type(model).__name__}")
        self.model = model
        self.seed = int(seed)
        self.learning_rate = float(learning_rate)
        self.bbvi_learning_rate = float(bbvi_learning_rate)
        self.schedule = schedules.get(schedule, iterations)
        self.sga = discretize.get("sga", rounding, three_class)  # SGA's rounding distribution (default atanh)
        # One trace for every image size (spatial dimensions unknown), so that an encoder that has seen other
        # sizes and a fresh decoder run the same graph.  Unknown shapes also keep Grappler's memory optimizer
        # from rewriting large gradient sums (AddN) into AssignAdds into a temporary variable, which add in the
        # order the terms happen to finish: on large images (1200x1200) that made the BBVI's q differ in the
        # last bits from call to call in one process, and the decoder could not give the side information back.
        y_spec, z_spec = model.latent_specs()
        step = tf.TensorSpec([], tf.int64)
        self._stage1 = tf.function(self._stage1_chunk, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32), (y_spec, z_spec, z_spec) * 3, step, step,
            tf.TensorSpec([2], tf.int32)])
        self._stage2 = tf.function(self._bbvi_chunk, input_signature=[y_spec, (z_spec,) * 6, step])

    def _eps(self, shape, step, salt):
        seed = tf.stack([tf.constant(self.seed + salt, tf.int32), tf.cast(step, tf.int32)])
        one = tf.random.stateless_normal(tf.concat([[1], tf.shape(shape)[1:]], 0), seed)
        return tf.broadcast_to(one, tf.shape(shape))

    def _rate_bits(self, y, q_mean, q_log_var, step):
        """-log2 p(y | z) + log2 q(z) - log2 p(z) for one reparameterized sample z ~ q (per image)."""
        log_var = self.model.clip_log_variance(q_log_var)
        z = q_mean + tf.exp(0.5 * log_var) * self._eps(q_mean, step, 1)
        mu, index = self.model.y_prior_params(z)
        return self.model.bits_y(y, mu, index) + self.model.net_z_bits(z, q_mean, log_var)

    def _stage1_chunk(self, x, state, start, num_steps, valid):
        """Joint SGA over y (integer grid) and BBVI over (mean, log variance) of q, on the NELBO + distortion."""
        params, ms, vs = list(state[:3]), list(state[3:6]), list(state[6:])
        num_pixels = tf.cast(valid[0] * valid[1], tf.float32)
        for i in tf.range(num_steps):
            t = start + i
            with tf.GradientTape() as tape:
                tape.watch(params)
                seed = tf.stack([tf.constant(self.seed, tf.int32), tf.cast(t, tf.int32)])
                y_t = self.sga(params[0], 0.0, self.schedule(t), seed)
                bits = self._rate_bits(y_t, params[1], params[2], t)
                x_hat = self.model.synthesize(y_t)
                mse = tf.reduce_mean(tf.math.squared_difference(x[:, :valid[0], :valid[1]],
                                                                x_hat[:, :valid[0], :valid[1]]), axis=(1, 2, 3))
                total = tf.reduce_sum(bits / num_pixels + self.model.config.lmbda * mse)
            grads = tape.gradient(total, params)
            params, ms, vs = optim.adam_step(params, grads, ms, vs, t, self.learning_rate)
        return tuple(params + ms + vs)

    def _bbvi_chunk(self, y_hat, state, num_steps):
        params, ms, vs = list(state[:2]), list(state[2:4]), list(state[4:])
        for t in tf.range(num_steps):
            with tf.GradientTape() as tape:
                tape.watch(params)
                total = tf.reduce_sum(self._rate_bits(y_hat, params[0], params[1], t))
            grads = tape.gradient(total, params)
            params, ms, vs = optim.adam_step(params, grads, ms, vs, t, self.bbvi_learning_rate)
        return tuple(params + ms + vs)

    def optimize_y(self, x, valid_shape, iterations: int, progress=False) -> tf.Tensor:
        """Stage 1 of SGA+BB: returns y_hat (integers) after joint SGA/BBVI from the amortized encoder."""
        from tqdm import tqdm
        y = self.model.analysis_transform(x)
        mean, log_var = self.model.q_params(y)
        ms, vs = optim.init_state([y, mean, log_var])
        state = tuple([y, mean, log_var] + ms + vs)
        valid = tf.constant(valid_shape, tf.int32)
        chunk = 50
        with tqdm(total=iterations, desc="sga+bb", unit="it", disable=(progress is False), leave=False) as bar:
            for start in range(0, iterations, chunk):
                n = min(chunk, iterations - start)
                state = self._stage1(x, state, tf.constant(start, tf.int64), tf.constant(n, tf.int64), valid)
                bar.update(n)
        return tf.round(state[0])

    def reproducible_bbvi(self, y_hat: tf.Tensor, iterations: int) -> Tuple[np.ndarray, np.ndarray]:
        """q(z | y_hat) = (mean, log variance) from h_a(y_hat), refined by ``iterations`` BBVI steps."""
        mean, log_var = self.model.q_params(y_hat)
        if iterations > 0:
            ms, vs = optim.init_state([mean, log_var])
            state = self._stage2(y_hat, tuple([mean, log_var] + ms + vs), tf.constant(iterations, tf.int64))
            mean, log_var = state[0], self.model.clip_log_variance(state[1])
        return mean.numpy(), log_var.numpy()


_INFERENCES: Dict[Tuple, BitsBackInference] = {}


def get_inference(model, seed: int = 0, learning_rate: float = 0.005, schedule=None, iterations: int = 2000,
                  bbvi_learning_rate: float = DEFAULT_BBVI_LR, rounding=None,
                  three_class: bool = False) -> BitsBackInference:
    """A cached :class:`BitsBackInference`: its compiled stages are traced once per image size and reused by
    later calls (a new instance retraces them, seconds per encode or decode)."""
    key = (id(model), int(seed), float(learning_rate), schedules.get(schedule, iterations), float(bbvi_learning_rate),
           discretize.get("sga", rounding, three_class))
    if key not in _INFERENCES:
        _INFERENCES[key] = BitsBackInference(model, seed, learning_rate, schedule, iterations, bbvi_learning_rate,
                                             rounding, three_class)
    return _INFERENCES[key]


def q_checksum(mean: np.ndarray, log_var: np.ndarray) -> bytes:
    return struct.pack(">I", zlib.crc32(np.ascontiguousarray(mean, np.float32).tobytes()
                                        + np.ascontiguousarray(log_var, np.float32).tobytes()))


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    value = 0
    for shift in range(0, 35, 7):
        if pos >= len(data):
            raise CorruptBitstreamError("bits-back metadata is truncated")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
    raise CorruptBitstreamError("malformed bits-back metadata")


@dataclasses.dataclass
class BitsBackEncoded:
    streams: list
    y_hat: tf.Tensor
    z_hat: tf.Tensor
    info: Dict[str, Any]


def _y_params(model, z_hat):
    mu, index = model.y_prior_params(z_hat)
    return mu.numpy().astype(np.float64).ravel(), model.scale_fn(index).numpy().astype(np.float64).ravel()


def encode(model, x_padded: tf.Tensor, valid_shape, method: str, side_info: Optional[bytes] = None,
           iterations: int = 2000, bbvi_iterations: int = 2000, seed: int = 0, learning_rate: float = 0.005,
           bbvi_learning_rate: float = DEFAULT_BBVI_LR, schedule=None, progress=False, rounding=None,
           three_class: bool = False) -> BitsBackEncoded:
    """Bits-back encoding (Algorithm 1) of one padded image; see the module docstring for the layout.
    ``rounding`` / ``three_class``: the rounding distribution of the SGA stage (``sga+bb``)."""
    if method not in BB_METHODS:
        raise ValueError(f"unknown bits-back method {method!r}; expected one of {BB_METHODS}")
    side_info = bytes(side_info or b"")
    inf = get_inference(model, seed, learning_rate, schedule, iterations, bbvi_learning_rate, rounding, three_class)
    t0 = time.perf_counter()
    if method == "sga+bb":
        y_hat = inf.optimize_y(x_padded, valid_shape, iterations, progress)
    else:
        y_hat = tf.round(model.analysis_transform(x_padded))
        iterations = 0
    t1 = time.perf_counter()
    if method == "bb-amortized":
        bbvi_iterations = 0
    mean, log_var = inf.reproducible_bbvi(y_hat, bbvi_iterations)
    t2 = time.perf_counter()
    std = np.exp(0.5 * log_var.astype(np.float64))
    table = prior_table(model)
    c = _constriction()

    # side information -> words at the top of the stack, pad words below them if it is too short
    nbytes = len(side_info)
    padded_side = side_info + b"\0" * (-nbytes % 4)
    entropy_bits = np.sum(np.maximum(0.0, 0.5 * np.log2(2 * math.pi * math.e * (std / Z_GRID) ** 2 + 1.0)))
    needed_words = int(math.ceil((1.25 * entropy_bits + 256) / 32))
    nonce = 0
    while True:
        words = np.frombuffer(whiten(padded_side, nonce), dtype="<u4").astype(np.uint32)
        pad_words = max(0, needed_words - len(words))
        pad = np.random.default_rng([PAD_SEED, nonce]).integers(0, 1 << 32, size=pad_words,
                                                                dtype=np.uint64).astype(np.uint32)
        ans = c.stream.stack.AnsCoder(np.concatenate([pad, words]).astype(np.uint32), seal=True)
        initial_bits = 32 * (pad_words + len(words))
        # bits back: sample z from q by decoding
        z_k = _pop_q(ans, table, mean, std)
        # An exhausted stack decodes the lowest symbol forever: z from q's far tail, tens of thousands of bits.
        # Decoding never adds valid bits, so enough left at the end means the stack never ran dry.
        if ans.num_valid_bits() < MIN_VALID_BITS:
            needed_words = int(math.ceil(needed_words * 1.25)) + 8  # a sample that took more than the estimate
            continue
        # The coder gives every symbol of a channel's range a floor probability (2^-24 or so), so about one
        # image in ten draws some z element from q's far tail, which h_s turns into poor y parameters (seen:
        # +7% file size). Such a sample is redrawn with other stack bits (another whitening nonce).
        if _tail_elements(z_k, mean, std) == 0 or nonce >= MAX_NONCE:
            break
        nonce += 1
    z_hat = tf.constant(z_k * Z_GRID, tf.float32)
    mu, sigma = _y_params(model, z_hat)
    y_int = y_hat.numpy().astype(np.int64).ravel()
    y_lo, y_hi = int(y_int.min()), int(y_int.max())
    y_hi = max(y_hi, y_lo + 1)  # constriction needs a range of at least two symbols
    if y_lo < SYMBOL_MIN or y_hi > SYMBOL_MAX:
        raise TFCInferenceError("latent values exceed the coder's symbol range")
    ans.encode_reverse(y_int.astype(np.int32), _gaussian_model(y_lo, y_hi), mu, sigma)
    for ch in range(z_k.shape[-1]):
        ans.encode_reverse((z_k[0, ..., ch].ravel() - table.kmin[ch]).astype(np.int32),
                           c.stream.model.Categorical(table.pmfs[ch], perfect=False))
    compressed = ans.get_compressed().astype("<u4").tobytes()
    meta = (b"".join(encode_varint(v) for v in (nbytes, pad_words, bbvi_iterations, seed, _zigzag(y_lo),
                                                 y_hi - y_lo))
            + struct.pack(">f", bbvi_learning_rate) + q_checksum(mean, log_var)
            + (bytes([FLAG_WHITENED | FLAG_NONCE]) + encode_varint(nonce) if nonce else bytes([FLAG_WHITENED])))

    bits_y = float(model.bits_y(y_hat, *model.y_prior_params(z_hat))[0])
    bits_z = table.bits(z_k[0])
    bits_q = _q_bits(z_k, mean.astype(np.float64), std)
    info = dict(side_info_bits=8 * nbytes, pad_words=pad_words, initial_stack_bits=initial_bits,
                bits_y=bits_y, bits_z=bits_z, bits_back=bits_q, estimated_net_bits=bits_y + bits_z - bits_q,
                iterations=iterations, bbvi_iterations=bbvi_iterations, q_checksum=q_checksum(mean, log_var).hex(),
                # wall-clock seconds per step of stage 1 (joint SGA + BBVI) and of the reproducible BBVI
                seconds_per_iteration=(t1 - t0) / iterations if iterations else 0.0,
                bbvi_seconds_per_iteration=(t2 - t1) / bbvi_iterations if bbvi_iterations else 0.0)
    return BitsBackEncoded(streams=[meta, compressed], y_hat=y_hat, z_hat=z_hat, info=info)


@dataclasses.dataclass
class BitsBackDecoded:
    y_hat: tf.Tensor
    z_hat: tf.Tensor
    side_info: Optional[bytes]
    side_info_error: Optional[str]


def decode(model, streams, y_shape) -> BitsBackDecoded:
    """Mirror of :func:`encode`: the latents (always) and the side information (if q is reproduced exactly)."""
    if len(streams) != 2:
        raise CorruptBitstreamError(f"a bits-back file has 2 streams, found {len(streams)}")
    meta, payload = streams
    pos = 0
    nbytes, pos = _read_varint(meta, pos)
    pad_words, pos = _read_varint(meta, pos)
    bbvi_iterations, pos = _read_varint(meta, pos)
    seed, pos = _read_varint(meta, pos)
    y_lo, pos = _read_varint(meta, pos)
    y_range, pos = _read_varint(meta, pos)
    y_lo = _unzigzag(y_lo)
    if y_lo < SYMBOL_MIN or y_lo + y_range > SYMBOL_MAX or y_range < 1:
        raise CorruptBitstreamError("implausible latent range")
    if len(meta) < pos + 8:
        raise CorruptBitstreamError("bits-back metadata has the wrong length")
    bbvi_lr = struct.unpack(">f", meta[pos:pos + 4])[0]
    checksum = meta[pos + 4:pos + 8]
    pos += 8
    flags, nonce = 0, 0  # files written before the flags byte end at the checksum
    if pos < len(meta):
        flags, pos = meta[pos], pos + 1
        if flags & ~(FLAG_WHITENED | FLAG_NONCE):
            raise CorruptBitstreamError(f"unknown bits-back flags {flags:#04x} (a newer version wrote this file?)")
        if flags & FLAG_NONCE:
            nonce, pos = _read_varint(meta, pos)
            if not 0 < nonce <= MAX_NONCE:
                raise CorruptBitstreamError("implausible bits-back nonce")
    if pos != len(meta):
        raise CorruptBitstreamError("bits-back metadata has the wrong length")
    if len(payload) % 4 or not payload:
        raise CorruptBitstreamError("bits-back payload is not a whole number of 32-bit words")
    if bbvi_iterations > 100_000 or not (0 < bbvi_lr < 1):
        raise CorruptBitstreamError("implausible bits-back settings")
    c = _constriction()
    table = prior_table(model)
    ans = c.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    channels = len(table.pmfs)
    h, w = y_shape[0] // 4, y_shape[1] // 4
    z_k = np.zeros([1, h, w, channels], np.int64)
    try:
        for ch in reversed(range(channels)):
            z_k[0, ..., ch] = (ans.decode(c.stream.model.Categorical(table.pmfs[ch], perfect=False), h * w)
                               .reshape(h, w) + table.kmin[ch])
        z_hat = tf.constant(z_k * Z_GRID, tf.float32)
        mu, sigma = _y_params(model, z_hat)
        y_int = ans.decode(_gaussian_model(y_lo, y_lo + y_range), mu, sigma)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001  (constriction reports bad input as a Rust panic, a BaseException)
        raise CorruptBitstreamError(f"ANS decoder failed: {e}") from None
    y_hat = tf.constant(y_int.reshape([1, y_shape[0], y_shape[1], -1]), tf.float32)

    inf = get_inference(model, seed=seed, bbvi_learning_rate=bbvi_lr)
    mean, log_var = inf.reproducible_bbvi(y_hat, bbvi_iterations)
    if q_checksum(mean, log_var) != checksum:
        return BitsBackDecoded(y_hat, z_hat, None, "reproducible BBVI gave a different q(z) than the encoder's "
                               "(other hardware or library versions?): the image is intact but the side "
                               "information cannot be recovered")
    std = np.exp(0.5 * log_var.astype(np.float64))
    try:
        _push_q(ans, table, z_k, mean, std)
        words = ans.get_compressed(unseal=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001  (not in the sealed state, or a Rust panic on bad input)
        return BitsBackDecoded(y_hat, z_hat, None, f"side information stack is inconsistent ({e})")
    words = words[pad_words:]
    side = words.astype("<u4").tobytes()
    if len(side) < nbytes:
        return BitsBackDecoded(y_hat, z_hat, None, "side information is shorter than recorded")
    if flags & FLAG_WHITENED:
        side = whiten(side, nonce)
    return BitsBackDecoded(y_hat, z_hat, side[:nbytes], None)
