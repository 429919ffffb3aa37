"""Tests for minigd.datasets: IDX files, the bundled MNIST sample, load_mnist."""

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from minigd import datasets
from minigd.datasets import _mnist

FILE_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
N_FAKE_TRAIN, N_FAKE_TEST = 100, 20


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep every test away from the real cache, proxies and user settings."""
    for var in ("MINIGD_DATA", "MINIGD_MNIST_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setattr(_mnist, "DEFAULT_MIRRORS", ("http://127.0.0.1:9/unused/",))
    monkeypatch.setattr(_mnist, "DOWNLOAD_TIMEOUT", 5)


# ---------------------------------------------------------------- sample


def test_sample_shapes_dtypes_and_range():
    X_train, y_train, X_test, y_test = datasets.load_mnist_sample()
    assert X_train.shape == (8000, 784) and X_train.dtype == np.float32
    assert y_train.shape == (8000,) and y_train.dtype == np.int64
    assert X_test.shape == (2000, 784) and X_test.dtype == np.float32
    assert y_test.shape == (2000,) and y_test.dtype == np.int64
    for X in (X_train, X_test):
        assert X.min() == 0.0 and X.max() == 1.0
    for y in (y_train, y_test):
        assert y.min() == 0 and y.max() == 9


def test_sample_labels_and_known_values():
    X_train, y_train, X_test, y_test = datasets.load_mnist_sample()
    train_counts = np.bincount(y_train, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert len(train_counts) == len(test_counts) == 10
    assert train_counts.sum() == 8000 and test_counts.sum() == 2000
    assert (train_counts > 600).all() and (test_counts > 100).all()
    assert y_train[:10].tolist() == [2, 4, 4, 0, 8, 7, 7, 0, 3, 5]
    assert y_test[:10].tolist() == [6, 7, 3, 1, 1, 9, 5, 4, 6, 9]
    assert X_train[0].sum() == pytest.approx(68.623535, abs=1e-3)
    assert X_test[0].sum() == pytest.approx(132.49805, abs=1e-3)


def test_sample_split_is_the_fixed_permutation_and_disjoint():
    data_dir = os.path.join(os.path.dirname(datasets.__file__), "data")
    images = datasets.read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))
    labels = datasets.read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"))
    order = np.random.default_rng(0).permutation(10000)
    train_idx, test_idx = order[:8000], order[8000:]
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert len(set(train_idx.tolist()) | set(test_idx.tolist())) == 10000

    first = datasets.load_mnist_sample()
    second = datasets.load_mnist_sample()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    X_train, y_train, X_test, y_test = first
    np.testing.assert_array_equal(y_train, labels[train_idx])
    np.testing.assert_array_equal(y_test, labels[test_idx])
    np.testing.assert_array_equal(X_train * 255, images[train_idx].reshape(8000, 784))
    np.testing.assert_array_equal(X_test * 255, images[test_idx].reshape(2000, 784))


def test_sample_returns_independent_writable_copies():
    first = datasets.load_mnist_sample()
    for array in first:
        assert array.flags.writeable
        array[...] = 7
    second = datasets.load_mnist_sample()
    assert second[0].max() == 1.0 and second[1][:3].tolist() == [2, 4, 4]


def test_sample_detects_damaged_install(tmp_path, monkeypatch):
    bundled = os.path.join(os.path.dirname(datasets.__file__), "data")
    copy = tmp_path / "data"
    shutil.copytree(bundled, copy)
    labels = copy / "t10k-labels-idx1-ubyte.gz"
    os.chmod(labels, 0o644)
    content = bytearray(labels.read_bytes())
    content[-10] ^= 0xFF
    labels.write_bytes(bytes(content))
    monkeypatch.setattr(_mnist, "_BUNDLED_DIR", str(copy))
    _mnist._sample_arrays.cache_clear()
    try:
        with pytest.raises(datasets.DatasetUnavailableError, match="t10k-labels.*sha256"):
            datasets.load_mnist_sample()
    finally:
        _mnist._sample_arrays.cache_clear()


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("name", ["arr.idx", "arr.idx.gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([9, 0, 255], dtype=np.uint8),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([[-5, 70000]], dtype=np.int32),
    ],
    ids=["uint8-3d", "uint8-1d", "float32", "int32"],
)
def test_idx_round_trip(tmp_path, name, array):
    path = tmp_path / name
    datasets.write_idx(path, array)
    is_gzip = path.read_bytes()[:2] == b"\x1f\x8b"
    assert is_gzip == name.endswith(".gz")
    back = datasets.read_idx(str(path))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0
    assert os.listdir(tmp_path) == [name]


def test_idx_header_layout(tmp_path):
    path = tmp_path / "labels"
    datasets.write_idx(path, np.array([1, 2, 3], dtype=np.uint8))
    assert path.read_bytes() == bytes.fromhex("00000801 00000003 010203")


def test_idx_gzip_detected_by_content_not_extension(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    datasets.write_idx(tmp_path / "a.gz", array)
    os.rename(tmp_path / "a.gz", tmp_path / "compressed-no-ext")
    datasets.write_idx(tmp_path / "plain", array)
    os.rename(tmp_path / "plain", tmp_path / "plain-named.gz")
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "compressed-no-ext"), array)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "plain-named.gz"), array)


def test_idx_expected_magic(tmp_path):
    path = tmp_path / "labels-idx1.gz"
    datasets.write_idx(path, np.zeros(4, dtype=np.uint8))
    assert datasets.read_idx(path, expected_magic=0x801).shape == (4,)
    with pytest.raises(ValueError, match=r"labels-idx1\.gz.*0x00000801.*0x00000803"):
        datasets.read_idx(path, expected_magic=0x803)


def _write_raw(path, data, compress=False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_payload(tmp_path, compress):
    raw = bytes.fromhex("00000803 00000002 00000002 00000002") + bytes(7)
    path = _write_raw(tmp_path / "short.idx", raw, compress)
    with pytest.raises(ValueError, match=r"short\.idx.*truncated.*8 bytes.*7 bytes"):
        datasets.read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_trailing_bytes(tmp_path, compress):
    raw = bytes.fromhex("00000801 00000003") + bytes(4)
    path = _write_raw(tmp_path / "long.idx", raw, compress)
    with pytest.raises(ValueError, match=r"long\.idx.*trailing.*3 bytes.*4 bytes"):
        datasets.read_idx(path)


def test_idx_truncated_header(tmp_path):
    path = _write_raw(tmp_path / "hdr.idx", bytes.fromhex("00000803 00000002"))
    with pytest.raises(ValueError, match=r"hdr\.idx.*header"):
        datasets.read_idx(path)
    path = _write_raw(tmp_path / "tiny.idx", b"\x00\x00")
    with pytest.raises(ValueError, match=r"tiny\.idx"):
        datasets.read_idx(path)


def test_idx_unsupported_dtype_code(tmp_path):
    path = _write_raw(tmp_path / "odd.idx", bytes.fromhex("00000701 00000001 00"))
    with pytest.raises(ValueError, match=r"odd\.idx.*0x07"):
        datasets.read_idx(path)


def test_idx_not_an_idx_file(tmp_path):
    path = _write_raw(tmp_path / "text.txt", b"hello world")
    with pytest.raises(ValueError, match=r"text\.txt.*not an IDX file"):
        datasets.read_idx(path)


def test_idx_damaged_gzip(tmp_path):
    data = gzip.compress(bytes.fromhex("00000801 00000010") + bytes(16))
    path = _write_raw(tmp_path / "cut.gz", data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz.*gzip"):
        datasets.read_idx(path)


def test_idx_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="path"):
        datasets.read_idx(42)
    with pytest.raises(TypeError, match="expected_magic"):
        datasets.read_idx(tmp_path / "x", expected_magic="0x803")
    with pytest.raises(TypeError, match="int64"):
        datasets.write_idx(tmp_path / "x.idx", np.arange(3))
    with pytest.raises(TypeError, match="path"):
        datasets.write_idx(None, np.zeros(3, dtype=np.uint8))
    assert os.listdir(tmp_path) == []


def test_write_idx_replaces_existing_file_atomically(tmp_path):
    path = tmp_path / "x.idx.gz"
    datasets.write_idx(path, np.zeros(3, dtype=np.uint8))
    datasets.write_idx(path, np.ones((2, 2), dtype=np.uint8))
    np.testing.assert_array_equal(datasets.read_idx(path), np.ones((2, 2)))
    assert os.listdir(tmp_path) == ["x.idx.gz"]


# ---------------------------------------------------------------- load_mnist


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class FileServer:
    """A local HTTP server on a free port serving one directory."""

    def __init__(self, directory):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.running = True

    def stop(self):
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)
            self.running = False


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """Small fake MNIST files under ``served/mnist``, with the file table patched."""
    rng = np.random.default_rng(123)
    arrays = {
        FILE_NAMES[0]: rng.integers(0, 256, (N_FAKE_TRAIN, 28, 28), dtype=np.uint8),
        FILE_NAMES[1]: rng.integers(0, 10, N_FAKE_TRAIN, dtype=np.uint8),
        FILE_NAMES[2]: rng.integers(0, 256, (N_FAKE_TEST, 28, 28), dtype=np.uint8),
        FILE_NAMES[3]: rng.integers(0, 10, N_FAKE_TEST, dtype=np.uint8),
    }
    arrays[FILE_NAMES[0]][0, 0, 0] = 255
    folder = tmp_path / "served" / "mnist"
    folder.mkdir(parents=True)
    table = {}
    for name, array in arrays.items():
        path = folder / name
        datasets.write_idx(path, array)
        magic = 0x803 if array.ndim == 3 else 0x801
        table[name] = (hashlib.md5(path.read_bytes()).hexdigest(), magic, array.shape)
    monkeypatch.setattr(_mnist, "MNIST_FILES", table)
    return folder, arrays


@pytest.fixture
def server(fake_mnist):
    srv = FileServer(fake_mnist[0].parent)
    yield srv
    srv.stop()


def _closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def _assert_matches_fake(result, arrays):
    X_train, y_train, X_test, y_test = result
    assert X_train.shape == (N_FAKE_TRAIN, 784) and X_train.dtype == np.float32
    assert X_test.shape == (N_FAKE_TEST, 784) and X_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert X_train.max() == 1.0 and X_train.min() >= 0.0
    np.testing.assert_array_equal(X_train * 255, arrays[FILE_NAMES[0]].reshape(-1, 784))
    np.testing.assert_array_equal(y_train, arrays[FILE_NAMES[1]])
    np.testing.assert_array_equal(X_test * 255, arrays[FILE_NAMES[2]].reshape(-1, 784))
    np.testing.assert_array_equal(y_test, arrays[FILE_NAMES[3]])


def test_default_table_has_published_md5s():
    assert {n: v[0] for n, v in _mnist.MNIST_FILES.items()} == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }


def test_load_mnist_with_real_test_files_present_needs_only_train(tmp_path):
    bundled = os.path.join(os.path.dirname(datasets.__file__), "data")
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in FILE_NAMES[2:]:
        shutil.copy(os.path.join(bundled, name), cache / name)
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load_mnist(data_dir=cache, download=False)
    assert sorted(info.value.missing) == sorted(FILE_NAMES[:2])


def test_download_then_cache(tmp_path, fake_mnist, server):
    cache = tmp_path / "fresh" / "dir"
    result = datasets.load_mnist(data_dir=cache, mirror=server.url)
    _assert_matches_fake(result, fake_mnist[1])
    assert sorted(os.listdir(cache)) == sorted(FILE_NAMES)
    server.stop()
    again = datasets.load_mnist(data_dir=str(cache), mirror=server.url)
    _assert_matches_fake(again, fake_mnist[1])


def test_bad_checksum_download_leaves_no_file(tmp_path, fake_mnist, server):
    folder, _ = fake_mnist
    bad = folder / FILE_NAMES[1]
    bad.write_bytes(bad.read_bytes() + b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load_mnist(data_dir=cache, mirror=server.url)
    message = str(info.value)
    assert FILE_NAMES[1] in message and "checksum mismatch" in message
    assert server.url in message
    assert info.value.missing == [FILE_NAMES[1]]
    assert sorted(os.listdir(cache)) == sorted(set(FILE_NAMES) - {FILE_NAMES[1]})


def test_all_downloads_bad_leaves_cache_empty(tmp_path, fake_mnist, server, monkeypatch):
    table = {
        name: ("0" * 32, magic, shape) for name, (_, magic, shape) in _mnist.MNIST_FILES.items()
    }
    monkeypatch.setattr(_mnist, "MNIST_FILES", table)
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DatasetUnavailableError):
        datasets.load_mnist(data_dir=cache, mirror=server.url)
    assert os.listdir(cache) == []


def test_download_disabled_names_missing_files_and_directory(tmp_path, fake_mnist):
    cache = tmp_path / "empty"
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load_mnist(data_dir=cache, download=False)
    message = str(info.value)
    for name in FILE_NAMES:
        assert name in message
    assert str(cache) in message
    assert "download=False" in message
    assert "MINIGD_DATA" in message and "data_dir" in message
    assert isinstance(info.value, OSError)
    assert sorted(info.value.missing) == sorted(FILE_NAMES)
    assert info.value.directory == str(cache)
    assert not cache.exists()


def test_connection_refused_is_an_error_not_a_hang(tmp_path, fake_mnist):
    url = _closed_port_url()
    start = time.monotonic()
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load_mnist(data_dir=tmp_path / "c", mirror=url)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert url in message and "refused" in message.lower()
    assert os.listdir(tmp_path / "c") == []


def test_unresponsive_server_times_out(tmp_path, fake_mnist, monkeypatch):
    monkeypatch.setattr(_mnist, "DOWNLOAD_TIMEOUT", 0.3)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        start = time.monotonic()
        with pytest.raises(datasets.DatasetUnavailableError, match="timed out"):
            datasets.load_mnist(data_dir=tmp_path / "c", mirror=url)
        assert time.monotonic() - start < 10


def test_mirrors_tried_in_order(tmp_path, fake_mnist, server):
    dead = _closed_port_url()
    result = datasets.load_mnist(data_dir=tmp_path / "c", mirror=[dead, server.url + "/"])
    _assert_matches_fake(result, fake_mnist[1])


def test_http_404_reported(tmp_path, fake_mnist, server):
    with pytest.raises(datasets.DatasetUnavailableError, match="404"):
        datasets.load_mnist(data_dir=tmp_path / "c", mirror=server.url + "/nowhere")


def test_minigd_data_env_is_honoured(tmp_path, fake_mnist, server, monkeypatch):
    target = tmp_path / "from-env"
    monkeypatch.setenv("MINIGD_DATA", str(target))
    _assert_matches_fake(datasets.load_mnist(mirror=server.url), fake_mnist[1])
    assert sorted(os.listdir(target)) == sorted(FILE_NAMES)


def test_mirror_env_is_honoured(tmp_path, fake_mnist, server, monkeypatch):
    monkeypatch.setenv("MINIGD_MNIST_MIRROR", server.url)
    result = datasets.load_mnist(data_dir=tmp_path / "c")
    _assert_matches_fake(result, fake_mnist[1])


def test_default_cache_dir_follows_xdg_then_home(tmp_path, fake_mnist, server):
    datasets.load_mnist(mirror=server.url)
    assert sorted(os.listdir(tmp_path / "xdg-cache" / "minigd" / "mnist")) == sorted(FILE_NAMES)


def test_default_cache_dir_without_xdg(tmp_path, fake_mnist, server, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    datasets.load_mnist(mirror=server.url)
    cache = tmp_path / "home" / ".cache" / "minigd" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(FILE_NAMES)


def test_corrupted_cached_file_detected_and_redownloaded(tmp_path, fake_mnist, server):
    cache = tmp_path / "c"
    datasets.load_mnist(data_dir=cache, mirror=server.url)
    victim = cache / FILE_NAMES[2]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x55
    victim.write_bytes(bytes(data))
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load_mnist(data_dir=cache, download=False)
    assert info.value.missing == [FILE_NAMES[2]]
    assert "corrupted" in str(info.value) and FILE_NAMES[2] in str(info.value)
    result = datasets.load_mnist(data_dir=cache, mirror=server.url)
    _assert_matches_fake(result, fake_mnist[1])
    assert sorted(os.listdir(cache)) == sorted(FILE_NAMES)


def test_load_mnist_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="data_dir"):
        datasets.load_mnist(data_dir=123)
    with pytest.raises(TypeError, match="data_dir"):
        datasets.load_mnist(data_dir=b"/tmp")
    with pytest.raises(TypeError, match="download"):
        datasets.load_mnist(data_dir=tmp_path, download="yes")
    with pytest.raises(TypeError, match="mirror"):
        datasets.load_mnist(data_dir=tmp_path, mirror=5)
    with pytest.raises(ValueError, match="mirror"):
        datasets.load_mnist(data_dir=tmp_path, mirror=[])


def test_public_api():
    assert sorted(datasets.__all__) == sorted(
        [
            "load_mnist_sample",
            "load_mnist",
            "read_idx",
            "write_idx",
            "DatasetUnavailableError",
            "make_regression",
        ]
    )
    assert issubclass(datasets.DatasetUnavailableError, OSError)
    for name in datasets.__all__:
        assert getattr(datasets, name).__doc__
