"""The ``.tfci`` container: a versioned, checksummed wrapper around the entropy-coded streams.

Layout of format versions 1 and 2 (integers big-endian; ``varint`` = unsigned LEB128):

========  =====================  ==========================================================================
bytes     field                  meaning
========  =====================  ==========================================================================
4         magic                  ``b"TFCI"``
1         version                container format version (2; version 1 files are still read)
1         method                 index into :data:`METHODS` (how the encoder inferred the latents)
1         name length n          1..64
n         model name             zoo name of the model (UTF-8)
8         fingerprint            first 8 bytes of SHA-256 over the model's config and weights
varint    height, width          image size in pixels (1..32768 each, at most :data:`MAX_PIXELS` pixels)
1         stream count S         1..8
varint*S  stream lengths         byte length of each stream
...       streams                the coded streams (see below)
4         CRC-32                 over every preceding byte
========  =====================  ==========================================================================

Streams.  Version 1: hyperprior methods ``[z, y]``, bits-back methods ``[meta, ans words]``.  Version 2 appends
a third, *guard* stream to hyperprior-method files (optional for bits-back files; see :mod:`tfc_inference.codec`):
a checksum of the entropy models the encoder used (coding tables and every scale index), a checksum of the
latents, a checksum of the encoder's reconstruction, and the scale indexes the encoder pinned because they lay
within a hair of a rounding boundary.  It lets a decoder on other floating point numerics either decode exactly
or say so, instead of returning garbage.  Version 2 files are refused by version 1 readers with a version error.

Overhead: header + CRC-32 = 4 + 3 + n + 8 + 2..6 + 1 + S..2S + 4 bytes, i.e. 24 + n bytes for a Kodak-size image
with two streams of a few kB (the CRC-32 itself is 4 bytes); the version 2 guard stream adds 14 bytes for
hyperprior methods (three CRC-32s, pin count, its length field) plus about 2 bytes per pinned index (9 bytes
for a bits-back guard).  The CRC detects truncation and accidental corruption before any stream reaches a
decoder, and every size field is checked before anything is allocated.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import List, Tuple

from tfc_inference.errors import (CorruptBitstreamError, NotATFCIFileError, TruncatedBitstreamError,
                                  UnsupportedVersionError)

MAGIC = b"TFCI"
#: Version written by :func:`pack` by default.
VERSION = 2
#: Versions :func:`unpack` reads.
READABLE_VERSIONS = (1, 2)
METHODS = ("amortized", "sga", "map", "ste", "uniform-noise", "deterministic-annealing",
           "sga+bb", "bb-no-sga", "bb-amortized")
MAX_NAME = 64
MAX_SIDE = 1 << 15
#: Coding memory grows with the image area (an amortized encode of 4000x3000 peaks at about 4.6 GB of RSS with
#: the 64/96-channel zoo models); refuse headers (and images) beyond this many pixels (4096 x 4096).
MAX_PIXELS = 1 << 24
MAX_STREAMS = 8


@dataclasses.dataclass
class Header:
    method: str
    model_name: str
    fingerprint: bytes
    height: int
    width: int
    version: int = VERSION


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise TruncatedBitstreamError(f"file ends inside the {what} (byte {self.pos} of {len(self.data)})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        value = 0
        for shift in range(0, 35, 7):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise CorruptBitstreamError(f"malformed {what}")


def check_shape(height: int, width: int) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or height * width > MAX_PIXELS:
        raise CorruptBitstreamError(f"implausible image size {width}x{height} (at most {MAX_SIDE} per side and "
                                    f"{MAX_PIXELS} pixels)")


def pack(header: Header, streams: List[bytes]) -> bytes:
    """Serializes a header and its streams; the inverse of :func:`unpack`."""
    name = header.model_name.encode("utf-8")
    if not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"model name must be 1..{MAX_NAME} bytes, got {len(name)}")
    if len(header.fingerprint) != 8:
        raise ValueError("fingerprint must be 8 bytes")
    if not 1 <= len(streams) <= MAX_STREAMS:
        raise ValueError(f"1..{MAX_STREAMS} streams expected")
    check_shape(header.height, header.width)
    if header.version not in READABLE_VERSIONS:
        raise ValueError(f"cannot write container version {header.version}")
    parts = [MAGIC, struct.pack(">BBB", header.version, METHODS.index(header.method), len(name)), name,
             header.fingerprint, encode_varint(header.height), encode_varint(header.width), bytes([len(streams)])]
    parts += [encode_varint(len(s)) for s in streams]
    parts += list(streams)
    body = b"".join(parts)
    return body + struct.pack(">I", zlib.crc32(body))


def unpack(data: bytes) -> Tuple[Header, List[bytes]]:
    """Parses and verifies a container; raises a :class:`~tfc_inference.errors.BitstreamError` subclass."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise NotATFCIFileError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) or data[:4] != MAGIC:
        if MAGIC.startswith(data):
            raise TruncatedBitstreamError(f"file ends inside the magic number ({len(data)} bytes)")
        raise NotATFCIFileError("not a tfc_inference file (bad magic number)")
    r = _Reader(data)
    r.take(4, "magic")
    version, method_id, name_len = struct.unpack(">BBB", r.take(3, "header"))
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(f"container format version {version} is not supported (this release reads "
                                      f"versions {', '.join(map(str, READABLE_VERSIONS))})")
    # Everything after the version is covered by the checksum: verify it before trusting any field.
    if len(data) < r.pos + 4:
        raise TruncatedBitstreamError("file ends inside the header")
    body, crc = data[:-4], struct.unpack(">I", data[-4:])[0]
    try:
        name = r.take(name_len, "model name").decode("utf-8")
        fingerprint = r.take(8, "fingerprint")
        height, width = r.varint("image height"), r.varint("image width")
        count = r.take(1, "stream count")[0]
        if not 1 <= count <= MAX_STREAMS:
            raise CorruptBitstreamError(f"implausible stream count {count}")
        lengths = [r.varint("stream length") for _ in range(count)]
    except (TruncatedBitstreamError, UnicodeDecodeError, CorruptBitstreamError) as e:
        if zlib.crc32(body) != crc:
            raise _size_or_checksum_error(data, r.pos) from None
        raise CorruptBitstreamError(f"malformed header: {e}") from None
    expected = r.pos + sum(lengths) + 4
    if len(data) < expected:
        raise TruncatedBitstreamError(f"file is truncated: {len(data)} bytes, header announces {expected}")
    if len(data) > expected:
        raise CorruptBitstreamError(f"{len(data) - expected} unexpected bytes after the end of the data")
    if zlib.crc32(body) != crc:
        raise CorruptBitstreamError("checksum mismatch: the file was damaged")
    if method_id >= len(METHODS):
        raise UnsupportedVersionError(f"unknown inference method id {method_id} (written by a newer release?)")
    if not 1 <= name_len <= MAX_NAME:
        raise CorruptBitstreamError(f"implausible model name length {name_len}")
    check_shape(height, width)
    streams = []
    for n in lengths:
        streams.append(r.take(n, "stream"))
    return Header(METHODS[method_id], name, fingerprint, height, width, version), streams


def _size_or_checksum_error(data: bytes, pos: int):
    return (TruncatedBitstreamError if pos >= len(data) - 4 else CorruptBitstreamError)(
        f"damaged or truncated header ({len(data)} bytes)")
