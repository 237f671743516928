"""Decompression of DECTRIS stream payloads: bitshuffle-LZ4 and LZ4, through maintained packages.

The encodings, as DECTRIS documents them:

- stream v1 ``dimage_d-1.0`` ``encoding``: ``"<"`` (raw little-endian), ``"lz4<"`` (one LZ4 block of the
  whole image, no framing) and ``"bs<BITS>-lz4<"`` (``bs8``/``bs16``/``bs32``: bitshuffle-LZ4 with the
  bitshuffle HDF5 filter's framing, the element size being BITS/8 bytes).
- stream v2 CBOR tag 56500 ``[algorithm, modifier, bytes]``: ``"bslz4"`` (modifier = element size, HDF5
  bitshuffle framing) and ``"lz4"`` (HDF5 LZ4 filter framing; modifier unused).

Both HDF5 framings start with a 12-byte big-endian header: the uncompressed size (u64) and the block size
in bytes (u32). bitshuffle then holds blocks of ``[u32 BE compressed size][LZ4 data]``; the HDF5 LZ4 filter
holds the same per block, a block whose compressed size equals its plain size being stored as is.

The work is done by maintained libraries, never by hand: DECTRIS's own ``dectris-compression`` when it is
installed (bitshuffle-LZ4 and framed LZ4; ~1-2 ms per 1024^2 uint16 frame), else ``bitshuffle`` (the HDF5
filter's reference library; it parallelises with OpenMP, which on a loaded machine is ~10x slower than one
thread: run with ``OMP_NUM_THREADS=1`` there); ``lz4`` (python-lz4) for v1's unframed ``lz4<`` (and
framed LZ4 without ``dectris-compression``). ``pip install 'sam4em-live[dectris]'`` installs them.
A payload that does not decompress to the announced size raises `PayloadError` (the source counts it as a
reject).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from typing import TypeAlias

    Buffer: TypeAlias = "bytes | bytearray | memoryview"

#: The stream v1 encodings we read, besides the raw "<".
_V1_ENCODING = re.compile(r"^(?:bs(?P<bits>8|16|32)-)?(?P<lz4>lz4)?<$")
_HDF5_HEADER = struct.Struct(">QI")
#: Largest block size we accept (DECTRIS uses 8 kB; bitshuffle's own default is of that order).
_MAX_BLOCK_BYTES = 1 << 24


class PayloadError(ValueError):
    """A payload that cannot be decoded; ``reason`` is a stable key for the source's reject counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class MissingDecompressor(ImportError):
    """The ``dectris`` extra is not installed: compressed frames cannot be read."""


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a payload is encoded: ``algorithm`` is ``"raw"``, ``"lz4-block"``, ``"lz4-hdf5"`` or ``"bslz4"``.

    ``element_size`` is bitshuffle's element size in bytes (``bslz4`` only; 0 otherwise).
    """

    algorithm: str
    element_size: int = 0

    @classmethod
    def from_v1(cls, encoding: object) -> Encoding:
        """The encoding a stream v1 ``dimage_d-1.0`` header names (``"<"``, ``"lz4<"``, ``"bs32-lz4<"``...)."""
        match = _V1_ENCODING.match(encoding) if isinstance(encoding, str) else None
        if match is None:
            raise PayloadError("unsupported_encoding", f"encoding {str(encoding)[:40]!r} (big-endian or unknown)")
        if match["bits"]:
            if not match["lz4"]:
                raise PayloadError("unsupported_encoding", f"encoding {encoding!r}: bitshuffle without LZ4")
            return cls("bslz4", int(match["bits"]) // 8)
        return cls("lz4-block" if match["lz4"] else "raw")

    @classmethod
    def from_v2(cls, algorithm: object, modifier: object) -> Encoding:
        """The encoding of a stream v2 compression tag (56500) ``[algorithm, modifier, ...]``."""
        if algorithm == "bslz4" and isinstance(modifier, int) and modifier in (1, 2, 4, 8):
            return cls("bslz4", modifier)
        if algorithm == "lz4":
            return cls("lz4-hdf5")
        raise PayloadError("unsupported_encoding", f"compression {str(algorithm)[:20]!r} / {str(modifier)[:20]}")


def _dectris_decompress() -> Any:
    """DECTRIS's ``dectris.compression.decompress``, or None where the package is not installed."""
    try:
        from dectris.compression import decompress
    except ImportError:
        return None
    return decompress


_DECTRIS = _dectris_decompress()
#: Which library decompresses bitshuffle-LZ4 payloads (docs, benchmarks).
BSLZ4_BACKEND = "dectris-compression" if _DECTRIS is not None else "bitshuffle"


def _lz4_block() -> object:
    try:
        import lz4.block
    except ImportError as exc:
        raise MissingDecompressor("LZ4 frames need the 'lz4' package: pip install 'sam4em-live[dectris]'") from exc
    return lz4.block


def decode_pixels(payload: Buffer, encoding: Encoding, dtype: np.dtype, shape: tuple[int, int]) -> np.ndarray:
    """The (rows, columns) image a payload holds; a read-only view of ``payload`` when it is raw.

    Raises `PayloadError` when the payload does not hold exactly ``rows * columns`` pixels of ``dtype``.
    """
    nbytes = shape[0] * shape[1] * dtype.itemsize
    view = memoryview(payload).cast("B")
    if encoding.algorithm == "raw":
        if view.nbytes != nbytes:
            raise PayloadError("size_mismatch", f"raw payload of {view.nbytes} bytes, expected {nbytes}")
        return np.frombuffer(view, dtype=dtype).reshape(shape)
    if _DECTRIS is not None and encoding.algorithm in ("bslz4", "lz4-hdf5"):
        return _with_dectris(view, encoding, dtype, shape, nbytes)
    if encoding.algorithm == "bslz4":
        return _bitshuffle_lz4(view, encoding.element_size, dtype, shape, nbytes)
    lz4_block = _lz4_block()
    try:
        if encoding.algorithm == "lz4-block":
            plain = lz4_block.decompress(view, uncompressed_size=nbytes)  # type: ignore[attr-defined]
        else:
            plain = _lz4_hdf5(view, nbytes, lz4_block)
    except PayloadError:
        raise
    except Exception as exc:  # lz4 raises LZ4BlockError (a bare Exception subclass) on corrupt input
        raise PayloadError("decompress_failed", f"lz4: {exc}") from None
    if len(plain) != nbytes:
        raise PayloadError("size_mismatch", f"lz4 payload decompressed to {len(plain)} bytes, expected {nbytes}")
    return np.frombuffer(plain, dtype=dtype).reshape(shape)


def _with_dectris(view: memoryview, encoding: Encoding, dtype: np.dtype, shape: tuple[int, int],
                  nbytes: int) -> np.ndarray:
    _hdf5_header(view, nbytes)  # the announced size, checked before anything is allocated
    if encoding.algorithm == "bslz4" and encoding.element_size != dtype.itemsize:
        raise PayloadError("size_mismatch", f"bitshuffle element size {encoding.element_size} for {dtype} pixels")
    name = "bslz4" if encoding.algorithm == "bslz4" else "lz4"
    try:
        plain = _DECTRIS(view, name, elem_size=dtype.itemsize)
    except Exception as exc:  # dectris-compression raises RuntimeError/ValueError on corrupt input
        raise PayloadError("decompress_failed", f"{name}: {exc}") from None
    if len(plain) != nbytes:
        raise PayloadError("size_mismatch", f"{name} payload decompressed to {len(plain)} bytes, expected {nbytes}")
    return np.frombuffer(plain, dtype=dtype).reshape(shape)


def _hdf5_header(view: memoryview, nbytes: int) -> int:
    """The block size (bytes) of an HDF5-framed payload, after checking its announced size."""
    if view.nbytes < _HDF5_HEADER.size:
        raise PayloadError("size_mismatch", f"compressed payload of {view.nbytes} bytes has no header")
    total, block_bytes = _HDF5_HEADER.unpack_from(view)
    if total != nbytes:
        raise PayloadError("size_mismatch", f"payload announces {total} bytes, the header says {nbytes}")
    if block_bytes <= 0 or block_bytes > _MAX_BLOCK_BYTES:
        raise PayloadError("decompress_failed", f"implausible block size {block_bytes}")
    return int(block_bytes)


def _bitshuffle_lz4(view: memoryview, element_size: int, dtype: np.dtype, shape: tuple[int, int],
                    nbytes: int) -> np.ndarray:
    try:
        import bitshuffle
    except ImportError as exc:
        raise MissingDecompressor("bitshuffle-LZ4 frames need the 'bitshuffle' package: "
                                  "pip install 'sam4em-live[dectris]'") from exc
    block_bytes = _hdf5_header(view, nbytes)
    if element_size != dtype.itemsize:
        raise PayloadError("size_mismatch", f"bitshuffle element size {element_size} for {dtype} pixels")
    body = np.frombuffer(view, dtype=np.uint8, offset=_HDF5_HEADER.size)
    try:
        pixels = bitshuffle.decompress_lz4(body, shape, dtype, block_bytes // element_size)
    except Exception as exc:  # bitshuffle raises RuntimeError/ValueError on corrupt blocks
        raise PayloadError("decompress_failed", f"bitshuffle-lz4: {exc}") from None
    return np.asarray(pixels)


def _lz4_hdf5(view: memoryview, nbytes: int, lz4_block: object) -> bytes:
    block_bytes = _hdf5_header(view, nbytes)
    out = bytearray(nbytes)
    pos, done = _HDF5_HEADER.size, 0
    while done < nbytes:
        if pos + 4 > view.nbytes:
            raise PayloadError("size_mismatch", "LZ4 payload ends inside a block header")
        (size,) = struct.unpack_from(">I", view, pos)
        pos += 4
        plain_size = min(block_bytes, nbytes - done)
        chunk = view[pos:pos + size]
        if chunk.nbytes != size:
            raise PayloadError("size_mismatch", "LZ4 payload ends inside a block")
        block = bytes(chunk) if size == plain_size else lz4_block.decompress(  # type: ignore[attr-defined]
            chunk, uncompressed_size=plain_size)
        if len(block) != plain_size:
            raise PayloadError("size_mismatch", f"LZ4 block of {len(block)} bytes, expected {plain_size}")
        out[done:done + plain_size] = block
        done += plain_size
        pos += size
    return bytes(out)


# ---------------------------------------------------------------- encoding (the stand-in publisher, tests)


def encode_pixels(pixels: np.ndarray, algorithm: str, block_bytes: int = 8192) -> bytes:
    """``pixels`` encoded as ``"raw"``, ``"lz4-block"``, ``"lz4-hdf5"`` or ``"bslz4"`` (see `Encoding`)."""
    arr = np.ascontiguousarray(pixels)
    if algorithm == "raw":
        return arr.tobytes()
    if algorithm == "bslz4":
        import bitshuffle

        blocks = bitshuffle.compress_lz4(arr, block_bytes // arr.itemsize)
        return _HDF5_HEADER.pack(arr.nbytes, block_bytes) + blocks.tobytes()
    import lz4.block

    if algorithm == "lz4-block":
        return lz4.block.compress(arr.tobytes(), store_size=False)
    if algorithm != "lz4-hdf5":
        raise ValueError(f"unknown algorithm {algorithm!r}")
    raw = arr.tobytes()
    parts = [_HDF5_HEADER.pack(len(raw), block_bytes)]
    for start in range(0, len(raw), block_bytes):
        block = raw[start:start + block_bytes]
        packed = lz4.block.compress(block, store_size=False)
        if len(packed) >= len(block):
            packed = block  # stored as is, as the HDF5 LZ4 filter does with incompressible blocks
        parts.append(struct.pack(">I", len(packed)) + packed)
    return b"".join(parts)
