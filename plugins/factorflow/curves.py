"""A training run's per-epoch history as JSON and as a loss / validation-RMSE curve (PNG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"


def save_history(history: Sequence[dict[str, Any]], out_dir: str | Path, *,
                 title: str = "") -> dict[str, str]:
    """Write ``history.json`` and ``curves.png`` (training loss and validation RMSE by epoch).

    Args:
        history: one dict per epoch with ``epoch`` and ``train_loss``, and
            ``valid_rmse`` / ``test_rmse`` when measured.
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
    (out / HISTORY_FILE).write_text(json.dumps(list(history), indent=1, default=float))
    (out / CURVES_FILE).write_bytes(png)
    return {"history": str(out / HISTORY_FILE), "curves": str(out / CURVES_FILE)}


def render_curve(history: Sequence[dict[str, Any]], *, title: str = "") -> bytes:
    """PNG bytes (700 x 400) of training loss and validation/test RMSE by epoch.

    Raises:
        ValueError: the history is empty.
    """
    if not history:
        raise ValueError("no epochs in the history: nothing to plot")
    import io

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        loss = [h.get("train_loss") for h in history]
        if any(v is not None for v in loss):
            loss_ax.plot(epochs, loss, color="tab:blue", label="training loss")
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("training loss", color="tab:blue")
        rmse_ax = loss_ax.twinx()
        for key, color in (("valid_rmse", "tab:orange"), ("test_rmse", "tab:green")):
            values = [h.get(key) for h in history]
            if any(v is not None for v in values):
                rmse_ax.plot(epochs, values, color=color, label=key.replace("_", " "))
        rmse_ax.set_ylabel("RMSE")
        handles = loss_ax.get_legend_handles_labels()[0] + rmse_ax.get_legend_handles_labels()[0]
        if handles:
            loss_ax.legend(handles=handles, loc="upper right")
        loss_ax.set_title(title or "training curve")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()
