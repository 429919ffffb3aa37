"""MNIST loaders: a bundled 10,000-image sample and the full downloaded set."""

import functools
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request

import numpy as np

from ._idx import MAGIC_IMAGES, MAGIC_LABELS, atomic_write, read_idx

__all__ = ["load_mnist_sample", "load_mnist", "DatasetUnavailableError"]

_log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

#: The full MNIST files: name -> (published md5, IDX magic number, array shape).
MNIST_FILES = {
    TRAIN_IMAGES: ("f68b3c2dcbeaaa9fbdd348bbdeb94873", MAGIC_IMAGES, (60000, 28, 28)),
    TRAIN_LABELS: ("d53e105ee54ea40749a09fcbcd1e9432", MAGIC_LABELS, (60000,)),
    TEST_IMAGES: ("9fb629c4189551a2d022fa330f9573f3", MAGIC_IMAGES, (10000, 28, 28)),
    TEST_LABELS: ("ec29112dd5afa0611ce80d1b7f02629c", MAGIC_LABELS, (10000,)),
}

#: Base URLs tried in order when no mirror is given.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Seconds to wait on each network operation of a download.
DOWNLOAD_TIMEOUT = 30

SAMPLE_SEED = 0
SAMPLE_N_TRAIN = 8000

_BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_BUNDLED_FILES = {TEST_IMAGES: MAGIC_IMAGES, TEST_LABELS: MAGIC_LABELS}
_CHUNK = 1 << 20


class DatasetUnavailableError(OSError):
    """The dataset files could not be found, downloaded or verified.

    Attributes
    ----------
    missing : list of str
        Names of the files that are missing or failed verification.
    directory : str or None
        Directory where the files were expected.
    attempts : dict
        File name -> list of ``"url: reason"`` strings for failed downloads.
    """

    def __init__(self, message, *, missing=(), directory=None, attempts=None):
        super().__init__(message)
        self.missing = list(missing)
        self.directory = directory
        self.attempts = dict(attempts or {})


def load_mnist_sample():
    """Load the 10,000-image MNIST sample bundled with minigd, split 8000/2000.

    The sample is the official MNIST test set, shipped inside the package,
    so no network access is needed. It is split with the fixed permutation
    ``np.random.default_rng(0).permutation(10000)``: the first 8000 indices
    form the training part, the last 2000 the test part; every call on every
    machine gives the same split. The decoded data are cached in the process;
    each call returns fresh, writable copies.

    Returns
    -------
    X_train : numpy.ndarray, float32, shape (8000, 784)
        Flattened 28x28 images, pixel values scaled to [0, 1] (0 = background).
    y_train : numpy.ndarray, int64, shape (8000,)
        Digit labels 0-9.
    X_test : numpy.ndarray, float32, shape (2000, 784)
    y_test : numpy.ndarray, int64, shape (2000,)

    Raises
    ------
    DatasetUnavailableError
        If the bundled files are missing or do not match ``data/sha256sums``
        (a damaged installation; reinstall minigd).

    Examples
    --------
    >>> X_train, y_train, X_test, y_test = load_mnist_sample()
    >>> X_train.shape, X_train.dtype, y_test.shape, y_test.dtype
    ((8000, 784), dtype('float32'), (2000,), dtype('int64'))
    """
    return tuple(array.copy() for array in _sample_arrays())


def load_mnist(data_dir=None, download=True, mirror=None):
    """Load the full MNIST dataset (60,000 training and 10,000 test images).

    The four original files (``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz``) are read from a data directory. Files
    there are checked against their published md5 sums; missing or damaged
    ones are downloaded (if allowed) to a temporary file, verified, and only
    then moved into place, so the directory never holds a partial file.

    Parameters
    ----------
    data_dir : str or os.PathLike or None, default None
        Directory holding the four files. If None, the ``MINIGD_DATA``
        environment variable is used, else ``$XDG_CACHE_HOME/minigd/mnist``
        (``~/.cache/minigd/mnist`` when ``XDG_CACHE_HOME`` is unset).
    download : bool, default True
        Whether to download files that are missing or fail verification.
    mirror : str or sequence of str or None, default None
        Base URL(s) the file names are appended to, tried in order. If None,
        the ``MINIGD_MNIST_MIRROR`` environment variable (one URL, or several
        separated by spaces) is used, else :data:`DEFAULT_MIRRORS`.

    Returns
    -------
    X_train : numpy.ndarray, float32, shape (60000, 784)
        Flattened 28x28 images, pixel values scaled to [0, 1] (0 = background).
    y_train : numpy.ndarray, int64, shape (60000,)
        Digit labels 0-9.
    X_test : numpy.ndarray, float32, shape (10000, 784)
    y_test : numpy.ndarray, int64, shape (10000,)

    Raises
    ------
    DatasetUnavailableError
        If a file is missing or damaged and cannot be downloaded. The message
        lists the files, the directory to put them in, each mirror tried and
        why it failed, and how to point minigd at another directory.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> X_train, y_train, X_test, y_test = load_mnist()  # doctest: +SKIP
    >>> X_train.shape, y_train.shape, X_test.shape, y_test.shape  # doctest: +SKIP
    ((60000, 784), (60000,), (10000, 784), (10000,))
    >>> load_mnist(data_dir="/data/mnist", download=False)  # doctest: +SKIP
    """
    _check_load_args(data_dir, download)
    directory = _resolve_data_dir(data_dir)
    mirrors = _resolve_mirrors(mirror)
    _ensure_files(directory, download, mirrors)
    arrays = {
        name: _read_checked(os.path.join(directory, name), magic, shape)
        for name, (_, magic, shape) in MNIST_FILES.items()
    }
    return (
        _to_features(arrays[TRAIN_IMAGES]),
        _to_labels(arrays[TRAIN_LABELS]),
        _to_features(arrays[TEST_IMAGES]),
        _to_labels(arrays[TEST_LABELS]),
    )


@functools.lru_cache(maxsize=1)
def _sample_arrays():
    """Decode, split and cache the bundled sample as read-only arrays."""
    _verify_bundled()
    images = read_idx(os.path.join(_BUNDLED_DIR, TEST_IMAGES), expected_magic=MAGIC_IMAGES)
    labels = read_idx(os.path.join(_BUNDLED_DIR, TEST_LABELS), expected_magic=MAGIC_LABELS)
    if images.shape[0] != labels.shape[0]:
        raise DatasetUnavailableError(
            f"bundled MNIST sample in {_BUNDLED_DIR} has {images.shape[0]} images "
            f"but {labels.shape[0]} labels; reinstall minigd",
            directory=_BUNDLED_DIR,
        )
    order = np.random.default_rng(SAMPLE_SEED).permutation(images.shape[0])
    train, test = order[:SAMPLE_N_TRAIN], order[SAMPLE_N_TRAIN:]
    X, y = _to_features(images), _to_labels(labels)
    arrays = (X[train], y[train], X[test], y[test])
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _verify_bundled():
    """Check the bundled files against ``data/sha256sums``."""
    sums_path = os.path.join(_BUNDLED_DIR, "sha256sums")
    try:
        sums = _parse_checksums(sums_path)
    except OSError as exc:
        raise _corrupted_install(f"cannot read {sums_path}: {exc}") from exc
    for name in _BUNDLED_FILES:
        path = os.path.join(_BUNDLED_DIR, name)
        if name not in sums:
            raise _corrupted_install(f"{sums_path} has no entry for {name}")
        try:
            actual = _file_digest(path, "sha256")
        except OSError as exc:
            raise _corrupted_install(f"cannot read {path}: {exc}") from exc
        if actual != sums[name]:
            raise _corrupted_install(f"{path} has sha256 {actual}, expected {sums[name]}")


def _corrupted_install(detail):
    """Build the error raised when the bundled sample is damaged."""
    return DatasetUnavailableError(
        f"the MNIST sample bundled with minigd is damaged: {detail}. "
        "Reinstall minigd (pip install --force-reinstall minigd).",
        directory=_BUNDLED_DIR,
    )


def _parse_checksums(path):
    """Parse a ``sha256sum``-style file into a dict name -> lowercase hex digest."""
    sums = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split(None, 1)
            if len(parts) == 2 and not line.startswith("#"):
                sums[parts[1].strip().lstrip("*")] = parts[0].lower()
    return sums


def _file_digest(path, algorithm):
    """Return the hex digest of a file's content."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _to_features(images):
    """Flatten uint8 images to float32 rows scaled to [0, 1]."""
    return images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255)


def _to_labels(labels):
    """Return labels as int64."""
    return labels.astype(np.int64)


def _check_load_args(data_dir, download):
    """Raise TypeError for a badly typed ``load_mnist`` argument."""
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(
            f"data_dir must be a str, os.PathLike or None, got {type(data_dir).__name__}"
        )
    if data_dir is not None and not isinstance(os.fspath(data_dir), str):
        raise TypeError("data_dir must be a text path, not bytes")
    if not isinstance(download, (bool, np.bool_)):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")


def _resolve_data_dir(data_dir):
    """Return the data directory: argument, ``MINIGD_DATA``, or the user cache."""
    if data_dir is not None:
        return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    env = os.environ.get("MINIGD_DATA")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    cache = os.environ.get("XDG_CACHE_HOME")
    if not cache or not os.path.isabs(cache):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "minigd", "mnist")


def _resolve_mirrors(mirror):
    """Return the list of base URLs to try, each ending in ``/``."""
    if mirror is None:
        env = os.environ.get("MINIGD_MNIST_MIRROR", "")
        urls = env.split() or list(DEFAULT_MIRRORS)
    elif isinstance(mirror, str):
        urls = [mirror]
    elif isinstance(mirror, (list, tuple)) and all(isinstance(m, str) for m in mirror):
        urls = list(mirror)
    else:
        raise TypeError(
            f"mirror must be a str, a list/tuple of str or None, got {type(mirror).__name__}"
        )
    if not urls or not all(url.strip() for url in urls):
        raise ValueError(f"mirror must name at least one non-empty URL, got {mirror!r}")
    return [url.strip() if url.strip().endswith("/") else url.strip() + "/" for url in urls]


def _ensure_files(directory, download, mirrors):
    """Make sure every file of ``MNIST_FILES`` is in ``directory`` and verified."""
    problems = {}
    for name, (md5, _, _) in MNIST_FILES.items():
        problem = _check_cached(os.path.join(directory, name), md5)
        if problem:
            problems[name] = problem
    if not problems:
        return
    if not download:
        raise _unavailable(directory, problems, {}, mirrors, download)
    attempts = {}
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        attempts = {name: [f"cannot create {directory}: {exc}"] for name in problems}
        raise _unavailable(directory, problems, attempts, mirrors, download) from exc
    for name in problems:
        failures = _download(name, MNIST_FILES[name][0], directory, mirrors)
        if failures:
            attempts[name] = failures
    if attempts:
        still = {name: problems[name] for name in attempts}
        raise _unavailable(directory, still, attempts, mirrors, download)


def _check_cached(path, md5):
    """Return None if ``path`` exists with the right md5, else why not."""
    if not os.path.exists(path):
        return "missing"
    try:
        actual = _file_digest(path, "md5")
    except OSError as exc:
        return f"unreadable ({exc})"
    if actual != md5:
        return f"corrupted (md5 {actual}, expected {md5})"
    return None


def _download(name, md5, directory, mirrors):
    """Fetch ``name`` from the first mirror that serves it intact.

    Returns the list of failures (empty on success); the file appears in
    ``directory`` only once its md5 has been verified.
    """
    failures = []
    for base in mirrors:
        url = base + name
        _log.info("downloading %s", url)
        try:
            _fetch_verified(url, os.path.join(directory, name), md5)
            return []
        except _ChecksumMismatch as exc:
            failures.append(f"{url}: {exc}")
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP error {exc.code} {exc.reason}")
        except urllib.error.URLError as exc:
            failures.append(f"{url}: {exc.reason}")
        except (OSError, ValueError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
    return failures


class _ChecksumMismatch(Exception):
    """A downloaded file's md5 differs from the expected one."""


def _fetch_verified(url, path, md5):
    """Download ``url`` to ``path`` atomically, or raise if its md5 is wrong."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
        with atomic_write(path) as fh:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                fh.write(chunk)
            if digest.hexdigest() != md5:
                raise _ChecksumMismatch(
                    f"checksum mismatch (md5 {digest.hexdigest()}, expected {md5})"
                )


def _unavailable(directory, problems, attempts, mirrors, download):
    """Build the error listing what is missing, where, and what was tried."""
    lines = [f"MNIST files unavailable in {directory}:"]
    lines += [f"  {name}: {why}" for name, why in problems.items()]
    if not download:
        lines.append("Downloading is disabled (download=False).")
    else:
        lines.append(f"Mirrors tried: {', '.join(mirrors)}")
        for name, failures in attempts.items():
            lines.append(f"  {name}:")
            lines += [f"    {failure}" for failure in failures]
    lines.append(
        f"Put the original files in {directory} (or fix them there), pass "
        "load_mnist(data_dir=...) or set the MINIGD_DATA environment variable "
        "to a directory that has them, or choose a download source with "
        "load_mnist(mirror=...) or MINIGD_MNIST_MIRROR."
    )
    return DatasetUnavailableError(
        "\n".join(lines), missing=problems, directory=directory, attempts=attempts
    )


def _read_checked(path, magic, shape):
    """Read an IDX file and check its shape."""
    array = read_idx(path, expected_magic=magic)
    if array.shape != tuple(shape):
        raise ValueError(f"{path} holds an array of shape {array.shape}, expected {tuple(shape)}")
    return array
