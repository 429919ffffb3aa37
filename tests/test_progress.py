"""Progress bars: a quiet call imports only plain tqdm (tqdm.auto warns in a notebook without
ipywidgets even for a disabled bar: CI's notebook 12 failed on that warning), a bar that was
asked for is tqdm.auto's."""

import subprocess
import sys
import textwrap

from minigd.progress import progress_bar

QUIET_CALLS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import minigd as mg

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)

    def build(seed=0):
        return mg.Sequential(mg.Dense(5, 8), mg.ReLU(), mg.Dense(8, 3), seed=seed)

    with mg.use_backend("numpy"):
        model = build()
        mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1), epochs=1,
               batch_size=16, verbose=0)
        mg.sweep(build, X, y, batch_sizes=[16], lrs=[0.1], epochs=1, verbose=0)
        mg.lr_range_test(build(), X, y, num_iter=10, batch_size=16, progress=False)
        mg.gradient_noise_scale(build(), X, y, 4, 16, n_pairs=2, seed=0, progress=False)
    print("tqdm.auto" in sys.modules, "tqdm" in sys.modules)
    """
)


def test_quiet_calls_never_import_tqdm_auto():
    out = subprocess.run(
        [sys.executable, "-c", QUIET_CALLS], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]  # plain tqdm's disabled bars ran; tqdm.auto never loaded


def test_a_disabled_bar_is_plain_tqdm_and_prints_nothing(capsys):
    import tqdm
    from tqdm.auto import tqdm as auto_tqdm

    bar = progress_bar(3, "quiet", enabled=False)
    for _ in range(3):
        bar.update()
    bar.close()
    assert type(bar) is tqdm.tqdm and type(bar) is not auto_tqdm and bar.disable
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_an_enabled_bar_is_tqdm_auto_hidden_when_not_a_terminal():
    from tqdm.auto import tqdm as auto_tqdm

    bar = progress_bar(5, "sweep", enabled=True, unit="cell", leave=True)
    try:
        assert isinstance(bar, auto_tqdm)
        assert bar.disable == (not sys.stderr.isatty())  # tqdm's disable=None
    finally:
        bar.close()
