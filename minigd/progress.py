"""Progress bars for ``fit`` and the experiments (sweeps, the LR range test, the noise scale).

One helper, so that every bar behaves alike: a bar the caller did not ask for prints nothing
and imports only plain ``tqdm``. ``tqdm.auto`` (a notebook widget where ipywidgets is installed)
is imported for a bar that shows: importing it in a notebook without ipywidgets prints a
``TqdmWarning``, even for a disabled bar, which would put a warning under every quiet call.
"""

__all__ = ["progress_bar"]


def progress_bar(total, description, enabled, unit="it", leave=False):
    """A tqdm bar over ``total`` steps, labelled ``description``. ``enabled`` False: a disabled
    bar (``update`` and ``close`` do nothing visible). ``enabled`` True: tqdm.auto's bar, hidden
    when the output is not a terminal or notebook (tqdm's ``disable=None``)."""
    if enabled:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(
        total=total, desc=description, leave=leave, unit=unit, disable=None if enabled else True
    )
