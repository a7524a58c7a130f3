"""A training run's per-epoch history as JSON and as an RMSE-by-epoch curve (PNG)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from factorflow.engine.artifacts import replacing

HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"

#: The curves drawn, all on one RMSE axis so the train/validation gap shows:
#: (history key, legend label, colour).
SERIES = (("train_rmse", "train RMSE", "tab:blue"),
          ("valid_rmse", "validation RMSE", "tab:orange"),
          ("test_rmse", "test RMSE", "tab:green"))


def save_history(history: Sequence[dict[str, Any]], out_dir: str | Path, *,
                 title: str = "") -> dict[str, str]:
    """Write ``history.json`` and ``curves.png`` (train and validation RMSE by epoch).

    Args:
        history: one dict per epoch with ``epoch``, and ``train_rmse`` /
            ``valid_rmse`` / ``test_rmse`` when measured (other keys, such as
            ``train_loss``, are kept in the JSON but not drawn).
        out_dir: directory for both files (created if needed).
        title: the figure's title (e.g. the model id).

    Returns:
        ``{"history": path, "curves": path}``.

    Raises:
        ValueError: the history is empty.
    """
    out = Path(out_dir)
    png = render_curve(history, title=title)
    out.mkdir(parents=True, exist_ok=True)
    with replacing(out / HISTORY_FILE) as tmp:
        tmp.write_text(json.dumps(list(history), indent=1, default=float))
    with replacing(out / CURVES_FILE) as tmp:
        tmp.write_bytes(png)
    return {"history": str(out / HISTORY_FILE), "curves": str(out / CURVES_FILE)}


def curve_figure(history: Sequence[dict[str, Any]], *, title: str = "") -> Any:
    """A 700 x 400 px matplotlib ``Figure``: every RMSE series by epoch, on one axes.

    Train, validation and test RMSE share one y scale, so the gap between them
    is drawn to size. ``train_loss`` is not drawn: it is the training objective
    (any data loss, plus the penalty), not comparable with an RMSE. A history
    without ``train_rmse`` (published by an earlier factorflow) says so in the
    title instead of drawing something else in its place.

    Raises:
        ValueError: the history is empty.
    """
    if not history:
        raise ValueError("no epochs in the history: nothing to plot")
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in a server

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    drawn = set()
    for key, label, color in SERIES:
        values = [math.nan if h.get(key) is None else float(h[key]) for h in history]
        if not all(math.isnan(v) for v in values):
            ax.plot(epochs, values, color=color, label=label)
            drawn.add(key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    if drawn:
        ax.legend(loc="upper right")
    note = "" if "train_rmse" in drawn else " (no train RMSE recorded)"
    ax.set_title((title or "training curve") + note)
    fig.tight_layout()
    return fig


def render_curve(history: Sequence[dict[str, Any]], *, title: str = "") -> bytes:
    """PNG bytes (700 x 400) of :func:`curve_figure`.

    Raises:
        ValueError: the history is empty.
    """
    import io

    buffer = io.BytesIO()
    curve_figure(history, title=title).savefig(buffer, format="png")
    return buffer.getvalue()
