"""A warm start's previous model from a path: a ``.npz``, or a model directory with its id maps.

The layout is the one ``factorflow fit --out DIR`` writes (and the build
stage uses for its id maps): ``model.npz`` beside ``users.parquet`` and
``items.parquet``, whose rows are ``(<side>_index, <side>_id)``. A ``.npz``
path finds the id maps in its own directory; where there are none, rows are
matched by index (previous row ``j`` is new index ``j``), which a log line says.

:func:`warm_start_from` turns ``TrainConfig.init_from`` into the
:class:`~factorflow.engine.warm.WarmStart` that ``dispatch.fit(init=...)``
takes; anything that makes the previous model unusable (a missing or
unreadable file, id maps that do not fit it, see also
:func:`factorflow.engine.warm.incompatibility`) gives None and one log line
saying why: the fit is then exactly the cold one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from factorflow.engine.artifacts import ArtifactError, reading
from factorflow.engine.config import TrainConfig
from factorflow.engine.model import FactorModel
from factorflow.engine.warm import WarmStart, incompatibility, warm_start

MODEL_FILE = "model.npz"
ID_FILES = {"user": "users.parquet", "item": "items.parquet"}


class Previous(NamedTuple):
    """A previous model and its id maps.

    Attributes:
        model: the model, its ``config`` the settings it was trained with.
        user_ids: ``[n_users]`` the id of each user row, None without id maps.
        item_ids: ``[n_items]`` the id of each item row, None without id maps.
    """

    model: FactorModel
    user_ids: np.ndarray | None
    item_ids: np.ndarray | None


def read_previous(path: str | Path) -> Previous:
    """The model at ``path`` (a ``.npz`` or a directory holding ``model.npz``) and its id maps.

    Raises:
        FileNotFoundError: no model there.
        ArtifactError: the model or an id map cannot be read.
    """
    path = Path(path)
    model_file = path / MODEL_FILE if path.is_dir() else path
    if not model_file.is_file():
        raise FileNotFoundError(f"no model file {model_file}")
    model = FactorModel.load(model_file)
    files = [model_file.parent / ID_FILES[side] for side in ("user", "item")]
    if not all(f.is_file() for f in files):
        return Previous(model, None, None)
    return Previous(model, read_ids(files[0], "user"), read_ids(files[1], "item"))


def read_ids(path: Path, side: str) -> np.ndarray:
    """``[n]`` ids of an id map file, in index order (``<side>_index`` 0..n-1).

    Raises:
        ArtifactError: unreadable, or the columns or indices are not those of an id map.
    """
    import polars as pl

    index, name = f"{side}_index", f"{side}_id"
    with reading(path):
        frame = pl.read_parquet(path)
    if index not in frame.columns or name not in frame.columns:
        raise ArtifactError(path, f"lacks the columns {index!r} and {name!r}")
    frame = frame.sort(index)
    if not np.array_equal(frame[index].to_numpy(), np.arange(frame.height)):
        raise ArtifactError(path, f"{index} is not 0..{frame.height - 1}")
    return frame[name].to_numpy()


def warm_start_from(path: str | Path, *, user_ids, item_ids, config: TrainConfig,
                    log: Callable[[str], None] | None = None) -> WarmStart | None:
    """:func:`factorflow.engine.warm.warm_start` from the model at ``path``, or None (cold).

    Args:
        path: ``TrainConfig.init_from``: a ``.npz`` or a model directory.
        user_ids, item_ids: ``[n_users]``, ``[n_items]`` the new fit's ids.
        config: the new fit's settings.
        log: gets what was matched, or the one line saying why a cold start follows.
    """
    log = log or (lambda line: None)
    try:
        previous = read_previous(path)
    except (OSError, ValueError) as exc:  # missing, unreadable, another format version
        log(f"warm start from {path} not possible: {exc}; cold start")
        return None
    model, old_users, old_items = previous
    if old_users is None:
        if incompatibility(model, config) is None:  # else warm_start's one line says why not
            log(f"warm start from {path}: no id maps ({', '.join(ID_FILES.values())}) "
                "beside the model: rows matched by index")
        old_users, old_items = np.arange(model.n_users), np.arange(model.n_items)
        user_ids, item_ids = np.arange(len(user_ids)), np.arange(len(item_ids))
    return warm_start(model, old_users, old_items, user_ids, item_ids, config, log,
                      source=str(path))
