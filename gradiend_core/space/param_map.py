"""The parameter map: which base-model parameter entries form the GRADIEND input space.

A GRADIEND's input vector is the concatenation, in ``param_map`` order, of the selected entries of
each mapped base-model parameter (flattened row-major). Three coordinate spaces appear throughout:

* **local index** - position in the current GRADIEND input space, ``0 <= i < input_dim``;
* **flat index in a parameter** - position in one flattened base-model parameter;
* **base-global index** - position in the concatenation of *all* mapped parameters in full,
  ``0 <= g < unpruned_length``. It does not change when a model is pruned, so it is the space in
  which differently pruned models of one base model are compared.

Storage (format_version 0 of the reference package ``gradiend``): per parameter ``repr`` is
``all`` (every entry), ``indices`` (flat indices, int32 when the parameter has at most 2**31-1
entries, else int64) or ``mask`` (uint8 tensor of the parameter's shape). The writer picks
``indices`` when ``k * bytes_per_index < 0.8 * numel`` and ``mask`` otherwise, which is the
reference's rule, so that our exports are byte-for-byte the layout the reference would write.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ParamEntry", "ParamMap"]

INT32_MAX = 2**31 - 1
#: The reference writes ``indices`` only when they are smaller than 80 % of a byte mask.
INDICES_MARGIN = 0.80


def bytes_per_index(numel: int) -> int:
    """Bytes per stored flat index for a parameter of ``numel`` entries (4 or 8)."""
    return 4 if numel <= INT32_MAX else 8


def choose_repr(numel: int, num_selected: int) -> str:
    """Storage representation for a parameter with ``num_selected`` of ``numel`` entries kept.

    Returns ``"all"``, ``"indices"`` or ``"mask"`` by the reference package's size rule.
    """
    if num_selected == numel:
        return "all"
    if num_selected * bytes_per_index(numel) < numel * INDICES_MARGIN:
        return "indices"
    return "mask"


@dataclass(frozen=True)
class ParamEntry:
    """One mapped base-model parameter.

    Attributes:
        name: base-model parameter name, e.g. ``bert.encoder.layer.0.attention.self.query.weight``.
        shape: the parameter's full shape.
        positions: sorted unique flat indices (int64, 1-D) of the selected entries, or ``None``
            when every entry is selected (or when only their number is planned).
        planned: for a planned entry (see :meth:`ParamMap.planned`), the number of entries a
            selection will keep, before they are chosen; ``None`` otherwise.
    """

    name: str
    shape: tuple[int, ...]
    positions: np.ndarray | None = None
    planned: int | None = None

    @property
    def numel(self) -> int:
        """Entries in the full parameter."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def num_selected(self) -> int:
        """Entries of this parameter that are in the input space."""
        if self.planned is not None:
            return self.planned
        return self.numel if self.positions is None else int(self.positions.size)

    def selected_positions(self) -> np.ndarray:
        """Flat indices (int64) of the selected entries, materialising ``all`` as a range.

        Raises:
            ValueError: for a planned entry (its positions are not chosen yet).
        """
        if self.planned is not None:
            raise ValueError(f"{self.name}: a planned entry knows how many entries it keeps, not which.")
        if self.positions is None:
            return np.arange(self.numel, dtype=np.int64)
        return self.positions


class ParamMap:
    """Ordered parameter map; immutable once built (pruning returns a new map).

    Args:
        entries: parameters in input-space order.

    Raises:
        ValueError: on duplicate names or positions out of range.
    """

    def __init__(self, entries: Iterable[ParamEntry]):
        self.entries: list[ParamEntry] = list(entries)
        seen = set()
        for e in self.entries:
            if e.name in seen:
                raise ValueError(f"parameter {e.name!r} appears twice in the param_map")
            seen.add(e.name)
            if e.positions is not None and e.positions.size:
                if e.positions.min() < 0 or e.positions.max() >= e.numel:
                    raise ValueError(f"param_map entry {e.name!r}: selected positions must lie in [0, {e.numel})")
        counts = np.array([e.num_selected for e in self.entries], dtype=np.int64)
        totals = np.array([e.numel for e in self.entries], dtype=np.int64)
        #: start of each parameter in the local input space, length len(entries) + 1
        self.local_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        #: start of each parameter in the base-global space, length len(entries) + 1
        self.global_offsets = np.concatenate([[0], np.cumsum(totals)]).astype(np.int64)
        self._global_index: np.ndarray | None = None

    def __iter__(self) -> Iterator[ParamEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def input_dim(self) -> int:
        """Total selected entries (the GRADIEND input_dim)."""
        return int(self.local_offsets[-1])

    @property
    def unpruned_length(self) -> int:
        """Total entries of all mapped parameters (the input_dim before any pruning)."""
        return int(self.global_offsets[-1])

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def per_param_counts(self, keep: np.ndarray | None = None) -> np.ndarray:
        """Selected entries per parameter, int64 of shape ``(len(entries),)``.

        Args:
            keep: optional sorted local indices; when given, counts only those.
        """
        if keep is None:
            return np.diff(self.local_offsets)
        bounds = np.searchsorted(keep, self.local_offsets, side="left")
        return np.diff(bounds).astype(np.int64)

    def base_global_index(self) -> np.ndarray:
        """Base-global index (int64, shape ``(input_dim,)``) of every local input dimension.

        Cached: the map is immutable.
        """
        if self._global_index is None:
            parts = [
                e.selected_positions() + self.global_offsets[i] for i, e in enumerate(self.entries) if e.num_selected
            ]
            self._global_index = np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)
        return self._global_index

    def same_selection(self, other: ParamMap) -> bool:
        """True when both maps list the same parameters, shapes and selected positions."""
        if len(self.entries) != len(other.entries):
            return False
        for a, b in zip(self.entries, other.entries):
            if a.name != b.name or a.shape != b.shape or a.num_selected != b.num_selected:
                return False
            if (a.positions is not None or b.positions is not None) and not np.array_equal(
                a.selected_positions(), b.selected_positions()
            ):
                return False
        return True

    def planned(self, kept_per_param: np.ndarray) -> ParamMap:
        """The map after a selection that keeps ``kept_per_param[i]`` entries of parameter ``i``,
        known before the entries themselves are chosen: enough to plan the mapping files and their
        sizes (see :func:`gradiend_core.checkpoint.planned_file_sizes`), not to write them.

        Raises:
            ValueError: for a count outside ``[0, num_selected]`` or of the wrong length.
        """
        kept = np.asarray(kept_per_param, dtype=np.int64)
        if kept.shape != (len(self.entries),):
            raise ValueError(f"kept_per_param must have shape ({len(self.entries)},), got {kept.shape}.")
        out = []
        for e, k in zip(self.entries, kept.tolist()):
            if not 0 <= k <= e.num_selected:
                raise ValueError(f"{e.name}: cannot keep {k} of {e.num_selected} entries.")
            out.append(e if k == e.num_selected else ParamEntry(e.name, e.shape, None, k))
        return ParamMap(out)

    def restrict(self, keep: np.ndarray) -> ParamMap:
        """The map of the input space that keeps only the local indices ``keep`` (sorted unique, int64).

        This is how pruning composes: positions are always stored in each parameter's own flat
        space, so a second prune indexes the already-pruned positions, never the full ones.
        """
        keep = np.asarray(keep, dtype=np.int64)
        bounds = np.searchsorted(keep, self.local_offsets, side="left")
        new_entries = []
        for i, e in enumerate(self.entries):
            seg = keep[bounds[i] : bounds[i + 1]] - self.local_offsets[i]
            if seg.size == e.num_selected:
                new_entries.append(e)  # every selected entry of this parameter survives
            elif e.positions is None:
                new_entries.append(ParamEntry(e.name, e.shape, seg.copy()))  # local == flat position here
            else:
                new_entries.append(ParamEntry(e.name, e.shape, e.positions[seg]))
        return ParamMap(new_entries)

    # ------------------------------------------------------------------ storage representation
    def storage_plan(self) -> list[tuple[ParamEntry, str, str]]:
        """``(entry, repr, key)`` per parameter as ``save_pretrained`` stores it.

        Keys are ``L{i}`` with ``i`` the parameter's position in the map (the reference's naming).
        """
        return [(e, choose_repr(e.numel, e.num_selected), f"L{i}") for i, e in enumerate(self.entries)]

    def to_reference_dict(self) -> dict[str, dict[str, object]]:
        """The map in the reference package's in-memory form (``name -> spec``).

        Specs hold ``shape``, ``repr`` and a torch ``mask`` (bool, param shape) or ``indices``
        (int64) tensor, so code written against ``gradiend`` that reads ``model.param_map`` ports.
        """
        import torch

        out: dict[str, dict[str, object]] = {}
        for e, r, _ in self.storage_plan():
            spec: dict[str, object] = {"shape": tuple(e.shape), "repr": r}
            if r == "indices":
                spec["indices"] = torch.from_numpy(e.selected_positions().copy())
            elif r == "mask":
                m = np.zeros(e.numel, dtype=bool)
                m[e.selected_positions()] = True
                spec["mask"] = torch.from_numpy(m.reshape(e.shape))
            out[e.name] = spec
        return out

    @classmethod
    def full(cls, shapes: Iterable[tuple[str, Sequence[int]]]) -> ParamMap:
        """A map that selects every entry of the given ``(name, shape)`` parameters."""
        return cls(ParamEntry(n, tuple(int(s) for s in shape)) for n, shape in shapes)
