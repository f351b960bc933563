"""The kept dims as a table: the rows of the reference's ``export_topk_features``.

Columns and meaning follow ``gradiend``'s ``ModelWithGradiend.export_topk_features`` (0.2.3):

* ``rank`` - 1 for the most important kept dim;
* ``part`` - the importance source;
* ``importance`` - the dim's importance in that part (float);
* ``local_input_index`` - index in the model's current input space;
* ``base_global_index`` - index in the concatenation of all mapped parameters in full;
* ``param_name``, ``param_shape`` (list), ``param_numel`` - the base-model parameter;
* ``flat_index_in_param`` and ``coords`` (list) - the entry inside the parameter;
* ``param_row`` / ``param_col`` - ``coords[0]`` / ``coords[1]``, empty when the parameter has
  fewer dimensions.

The CSV has the reference's column order with ``coords`` and ``param_shape`` as JSON text; the
JSON is a list of row objects in the reference's key order. A table with token text
(:meth:`TopkFeatureTable.with_tokens`, see :mod:`gradiend_core.analysis.tokens`) has one extra
column, ``token``, last. The rows are the dims of a
:class:`Selection` (mask -> threshold -> topk), most important first by the selection rule's
order (ties: lower local index first), so with only a topk they are the reference's rows.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..ranking.keys import sort_keys
from ..ranking.ranking import Ranking
from ..selection.rule import Selection
from ..space.coords import decode_local
from ..space.param_map import ParamMap

__all__ = ["CSV_COLUMNS", "TopkFeatureTable", "ranked_kept", "to_csv", "to_json", "topk_feature_table"]

#: CSV columns, in the reference's order.
CSV_COLUMNS = (
    "rank",
    "part",
    "importance",
    "local_input_index",
    "base_global_index",
    "param_name",
    "flat_index_in_param",
    "param_row",
    "param_col",
    "coords",
    "param_shape",
    "param_numel",
)
#: The extra column of a table with token text (after the reference's columns).
TOKEN_COLUMN = "token"
#: Keys of a JSON row, in the reference's order.
JSON_KEYS = (
    "rank",
    "part",
    "importance",
    "local_input_index",
    "base_global_index",
    "param_name",
    "param_shape",
    "param_numel",
    "flat_index_in_param",
    "coords",
    "param_row",
    "param_col",
)


def ranked_kept(ranking: Ranking, keep: np.ndarray, limit: int | None = None) -> np.ndarray:
    """The kept local indices in rank order (most important first), at most ``limit`` of them.

    O(k) to look up and partition the kept dims' importance, plus a sort of the ``limit`` first;
    the input space is never sorted.

    Args:
        ranking: the ranking the selection was made with.
        keep: kept local indices (any order, unique), int ``(k,)``.
        limit: return only the first ``limit`` (``None``: all ``k``).

    Returns:
        int64 ``(min(k, limit),)``; ties by lower local index, NaN last (the selection rule).
    """
    keep = np.asarray(keep, dtype=np.int64)
    want = keep.size if limit is None else max(0, min(int(limit), keep.size))
    if want == 0:
        return np.empty(0, dtype=np.int64)
    keys = sort_keys(ranking.values_at(keep))
    cand = keep
    if want < keep.size:
        kth = np.partition(keys, keep.size - want)[keep.size - want]  # the want-th largest key
        take = keys >= kth
        cand, keys = keep[take], keys[take]
    return cand[np.lexsort((cand, ~keys))][:want]


def _ranked_rows(ranking: Ranking, kept: Selection | np.ndarray, limit: int | None):
    """``(local indices, importance, n_selected)`` of the first ``limit`` kept dims in rank order."""
    if isinstance(kept, Selection):
        if kept.dims is not None and kept.dims.ranking is ranking:
            local, vals = kept.dims.ranked_with_values(kept.k if limit is None else min(limit, kept.k))
            return local, vals, kept.k
        kept = kept.keep
    local = ranked_kept(ranking, kept, limit)
    return local, ranking.values_at(local), int(np.asarray(kept).size)


@dataclass(frozen=True)
class TopkFeatureTable:
    """Rows of kept dims as columns (numpy arrays and lists aligned by row).

    Attributes:
        part: importance source.
        rank: int64 ``(r,)``, 1-based.
        importance: float64 ``(r,)`` (the float32 importance, widened exactly).
        local_input_index, base_global_index, flat_index_in_param, param_numel: int64 ``(r,)``.
        param_name: list of str.
        param_shape, coords: lists of lists of int.
        n_selected: kept dims in the selection (rows may be fewer, see ``truncated``).
        token: per row, the token text of a token-embedding row (``""`` for other rows), or
            ``None`` when no tokenizer was available.
    """

    part: str
    rank: np.ndarray
    importance: np.ndarray
    local_input_index: np.ndarray
    base_global_index: np.ndarray
    param_name: list[str]
    flat_index_in_param: np.ndarray
    coords: list[list[int]]
    param_shape: list[list[int]]
    param_numel: np.ndarray
    n_selected: int
    token: list[str] | None = None

    @property
    def n_rows(self) -> int:
        return int(self.rank.size)

    @property
    def truncated(self) -> bool:
        """True when the table holds fewer rows than the selection keeps."""
        return self.n_rows < self.n_selected

    def with_tokens(self, tokenizer) -> TopkFeatureTable:
        """This table with the ``token`` column filled from ``tokenizer`` (see
        :func:`gradiend_core.analysis.tokens.token_texts`)."""
        from .tokens import token_texts

        return replace(self, token=token_texts(self.param_name, self.coords, self.param_shape, tokenizer))

    def columns(self) -> tuple:
        """The CSV columns of this table: the reference's, then ``token`` when filled."""
        return CSV_COLUMNS + ((TOKEN_COLUMN,) if self.token is not None else ())

    def param_row(self) -> list[int | None]:
        return [c[0] if len(c) >= 1 else None for c in self.coords]

    def param_col(self) -> list[int | None]:
        return [c[1] if len(c) >= 2 else None for c in self.coords]

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts with the reference's keys and plain Python values (JSON-ready)."""
        cols = {
            "rank": self.rank.tolist(),
            "part": [self.part] * self.n_rows,
            "importance": self.importance.tolist(),
            "local_input_index": self.local_input_index.tolist(),
            "base_global_index": self.base_global_index.tolist(),
            "param_name": self.param_name,
            "param_shape": self.param_shape,
            "param_numel": self.param_numel.tolist(),
            "flat_index_in_param": self.flat_index_in_param.tolist(),
            "coords": self.coords,
            "param_row": self.param_row(),
            "param_col": self.param_col(),
        }
        keys = JSON_KEYS
        if self.token is not None:
            cols[TOKEN_COLUMN] = self.token
            keys = JSON_KEYS + (TOKEN_COLUMN,)
        return [{k: cols[k][i] for k in keys} for i in range(self.n_rows)]


def topk_feature_table(
    param_map: ParamMap, ranking: Ranking, keep: Selection | np.ndarray, part: str, limit: int | None = None
) -> TopkFeatureTable:
    """The kept dims of a selection as feature rows, most important first.

    Args:
        param_map: the model's map.
        ranking: the ranking of the part named in the ``part`` column (its importance is listed).
        keep: a :class:`Selection` (rows then cost O(rows) when it ranked by ``ranking``) or its
            kept local indices (O(k)).
        part: the part's name, for the ``part`` column.
        limit: at most this many rows (``None``: every kept dim).

    Returns:
        A :class:`TopkFeatureTable`.

    Raises:
        ValueError: if the ranking's length is not the map's input_dim.
    """
    if ranking.size != param_map.input_dim:
        raise ValueError(f"the ranking has {ranking.size} dims but the param_map's input_dim is {param_map.input_dim}.")
    local, values, n_selected = _ranked_rows(ranking, keep, limit)
    d = decode_local(param_map, local)
    shapes = [list(e.shape) for e in param_map.entries]
    coords: list[list[int]] = [[] for _ in range(local.size)]
    for p in np.unique(d.param):
        rows = np.flatnonzero(d.param == p)
        shape = param_map.entries[int(p)].shape
        if not shape:
            continue
        parts = np.unravel_index(d.flat[rows], shape)
        for r, c in zip(rows.tolist(), np.stack(parts, axis=1).tolist()):
            coords[r] = c
    return TopkFeatureTable(
        part=part,
        rank=np.arange(1, local.size + 1, dtype=np.int64),
        importance=values.astype(np.float64),
        local_input_index=local,
        base_global_index=d.base_global,
        param_name=[param_map.entries[int(p)].name for p in d.param],
        flat_index_in_param=d.flat,
        coords=coords,
        param_shape=[shapes[int(p)] for p in d.param],
        param_numel=np.array([param_map.entries[int(p)].numel for p in d.param], dtype=np.int64),
        n_selected=n_selected,
    )


def to_csv(table: TopkFeatureTable) -> bytes:
    """The table as UTF-8 CSV in the reference's column order (lists as JSON, ``None`` empty)."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(table.columns()))
    writer.writeheader()
    for row in table.records():
        row["coords"] = json.dumps(row["coords"])
        row["param_shape"] = json.dumps(row["param_shape"])
        writer.writerow(row)
    return buf.getvalue().encode("utf-8")


def to_json(table: TopkFeatureTable) -> bytes:
    """The table as a UTF-8 JSON list of row objects (indent 2, as the reference writes it)."""
    return json.dumps(table.records(), indent=2).encode("utf-8")
