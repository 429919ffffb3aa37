"""Writing a benchmark's results: JSON and its PNG chart, each written atomically."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigd._io import atomic_open  # noqa: E402  (this checkout's minigd, installed or not)
from minigd.plot import save as save_figure  # noqa: E402,F401  (re-exported for the scripts)


def save_results(results, out, name, plot=None):
    """Write ``results`` to out/name.json and ``plot(results, out/name.png)``; print the paths."""
    os.makedirs(out, exist_ok=True)
    json_path = os.path.join(out, f"{name}.json")
    with atomic_open(json_path, "w") as handle:
        json.dump(results, handle, indent=2)
    if plot is None:
        print(f"wrote {json_path}")
        return
    plot(results, os.path.join(out, f"{name}.png"))
    print(f"wrote {json_path} and {name}.png")
