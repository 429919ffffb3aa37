"""Read and write IDX files, the format of the original MNIST distribution.

An IDX file is a big-endian header followed by the raw array data:

* two zero bytes,
* one byte giving the element type (``0x08`` unsigned byte, ``0x09`` signed
  byte, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64),
* one byte giving the number of dimensions ``ndim``,
* ``ndim`` unsigned 32-bit big-endian sizes,
* ``prod(sizes)`` elements in C order, big-endian.

The first four bytes read as one big-endian integer form the *magic number*:
``0x00000803`` for MNIST images (uint8, 3 dimensions) and ``0x00000801`` for
MNIST labels (uint8, 1 dimension).
"""

import contextlib
import gzip
import math
import os
import secrets
import struct
import zlib

import numpy as np

__all__ = ["read_idx", "write_idx", "MAGIC_IMAGES", "MAGIC_LABELS"]

MAGIC_IMAGES = 0x00000803
MAGIC_LABELS = 0x00000801

_GZIP_MAGIC = b"\x1f\x8b"

_TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in _TYPE_CODES.items()}

_MAX_DIM = 2**32 - 1


def read_idx(path, expected_magic=None):
    """Read an IDX file (plain or gzip-compressed) into a NumPy array.

    Compression is detected from the gzip magic bytes, so a ``.gz`` file that
    was decompressed in place (or a plain file named ``.gz``) still reads.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.
    expected_magic : int or None, default None
        If given, the file's magic number (e.g. ``0x00000803`` for MNIST
        images, ``0x00000801`` for MNIST labels) must equal it.

    Returns
    -------
    numpy.ndarray
        A new, writable array of shape ``dims`` (the sizes in the header),
        in native byte order; ``uint8`` for the MNIST files.

    Raises
    ------
    ValueError
        If the file is not valid IDX: short header, non-zero leading bytes,
        unknown type code, unexpected magic, or a payload whose size differs
        from the one the header announces (truncated file or trailing bytes).
        The message names the file.
    OSError
        If the file cannot be read.

    Examples
    --------
    >>> labels = read_idx("t10k-labels-idx1-ubyte.gz", expected_magic=0x801)  # doctest: +SKIP
    >>> labels.shape, labels.dtype  # doctest: +SKIP
    ((10000,), dtype('uint8'))
    """
    name = _check_path(path, "path")
    if expected_magic is not None and (
        isinstance(expected_magic, bool) or not isinstance(expected_magic, int)
    ):
        raise TypeError(
            f"expected_magic must be an int or None, got {type(expected_magic).__name__}"
        )
    data = _read_bytes(name)
    dtype, dims, offset = _parse_header(data, name, expected_magic)
    expected_size = math.prod(dims) * dtype.itemsize
    payload_size = len(data) - offset
    if payload_size != expected_size:
        problem = "truncated" if payload_size < expected_size else "has trailing bytes"
        raise ValueError(
            f"IDX file {name!r} {problem}: header announces shape {tuple(dims)} "
            f"({expected_size} bytes of data), but the payload has {payload_size} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write an array to an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    The file is written to a temporary file in the same directory and then
    moved into place, so a reader never sees a half-written file. The gzip
    header holds no timestamp, so equal arrays give byte-identical files.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; replaced if it exists. Its directory must exist.
    array : array_like
        Data to write, of dtype ``uint8`` (MNIST), ``int8``, ``int16``,
        ``int32``, ``float32`` or ``float64``; at most ``2**32 - 1`` elements
        along each axis.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``path`` is not a path or ``array`` has an unsupported dtype.
    ValueError
        If an axis is too long for the format.

    Examples
    --------
    >>> import numpy as np
    >>> write_idx("labels-idx1-ubyte.gz", np.array([3, 1, 4], dtype=np.uint8))  # doctest: +SKIP
    >>> read_idx("labels-idx1-ubyte.gz")  # doctest: +SKIP
    array([3, 1, 4], dtype=uint8)
    """
    name = _check_path(path, "path")
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        supported = ", ".join(str(dt.newbyteorder("=")) for dt in _TYPE_CODES.values())
        raise TypeError(
            f"array has dtype {array.dtype}, which IDX cannot store; "
            f"supported: {supported} (convert with array.astype(np.uint8) for images/labels)"
        )
    if any(size > _MAX_DIM for size in array.shape):
        raise ValueError(f"array shape {array.shape} has an axis longer than {_MAX_DIM}")
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    payload = array.astype(_TYPE_CODES[code], copy=False).tobytes(order="C")
    with atomic_write(name) as fh:
        if name.endswith(".gz"):
            basename = os.path.basename(name)
            with gzip.GzipFile(filename=basename, mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            fh.write(header)
            fh.write(payload)


@contextlib.contextmanager
def atomic_write(path):
    """Open a temporary file next to ``path``; move it onto ``path`` on success.

    Yields a binary file object. If the ``with`` block raises, the temporary
    file is removed and ``path`` is left untouched. The file gets the usual
    permissions (``0o666`` minus the umask).
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _check_path(path, argname):
    """Return ``path`` as a str, or raise TypeError naming ``argname``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argname} must be a str or os.PathLike, got {type(path).__name__}")
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a text path, got {type(name).__name__}")
    return name


def _read_bytes(name):
    """Return the file's content, decompressed if it starts with the gzip magic."""
    with open(name, "rb") as fh:
        data = fh.read()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"IDX file {name!r} is a damaged gzip file: {exc}") from exc


def _parse_header(data, name, expected_magic):
    """Return ``(dtype, dims, payload_offset)`` from an IDX header."""
    if len(data) < 4:
        raise ValueError(f"IDX file {name!r} is too short for a header ({len(data)} bytes)")
    zero0, zero1, code, ndim = data[:4]
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"IDX file {name!r} has magic number 0x{magic:08X}, expected 0x{expected_magic:08X}"
        )
    if zero0 or zero1:
        raise ValueError(
            f"{name!r} is not an IDX file: magic number 0x{magic:08X} "
            "does not start with two zero bytes"
        )
    if code not in _TYPE_CODES:
        known = ", ".join(f"0x{c:02X}" for c in _TYPE_CODES)
        raise ValueError(
            f"IDX file {name!r} has unsupported data type code 0x{code:02X} (supported: {known})"
        )
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(
            f"IDX file {name!r} is truncated inside its header: {ndim} dimensions "
            f"need {offset} header bytes, the file has {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:offset])
    return _TYPE_CODES[code], dims, offset
