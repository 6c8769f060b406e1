"""The replay buffer's storage tables: column FIFOs, reference-counted intern tables, the transition index.

:class:`~sac_glam.buffers.replay.ReplayBuffer` keeps its episodes in three :class:`ColumnFifo` tables
(steps, episodes, sources), its texts in :class:`InternTable` s and the (source id, t) rows that sampling
draws from in a :class:`TransitionIndex`. These are generic containers with their own invariants (global
row ids that never change, reference counts, per-group FIFO order) and know nothing of episodes, n-step
returns or goals; they sit apart so that ``replay.py`` reads as the buffer's logic (adding, evicting,
n-step targets) on top of them. The module docstring of ``replay.py`` explains the layout.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np

from sac_glam.buffers.her import GroupKey


class ColumnFifo:
    """Rows appended at the back and removed from the front; one numpy array per column.

    Live rows are ``array[head:tail]``; the live row ``i`` has the global id ``base + i``, which never
    changes, so other tables can refer to rows by global id. Appending compacts (moves the live rows to
    the front) or grows the arrays; keeping the arrays at least twice the live size makes both amortised
    O(1). Example: 10 rows appended then 4 popped -> head=4, tail=10, base=4; global id 7 is live row 3.
    """

    def __init__(self, dtypes: Mapping[str, type | np.dtype[Any]]) -> None:
        self._dtypes = {k: np.dtype(v) for k, v in dtypes.items()}
        self._cols = {k: np.empty(16, dtype=d) for k, d in self._dtypes.items()}
        self._head = 0
        self._tail = 0
        self.base = 0

    def __len__(self) -> int:
        return self._tail - self._head

    def col(self, name: str) -> np.ndarray:
        """The live rows of a column (a view, valid until the next append)."""
        return self._cols[name][self._head : self._tail]

    def append(self, **values: Any) -> int:
        """Append rows (equal-length arrays or scalars for one row); returns the first new global id."""
        arrays = {k: np.atleast_1d(np.asarray(v, dtype=self._dtypes[k])) for k, v in values.items()}
        if arrays.keys() != self._dtypes.keys():
            raise KeyError(f"columns {sorted(arrays)} != {sorted(self._dtypes)}")
        n = len(next(iter(arrays.values())))
        live = len(self)
        cap = len(next(iter(self._cols.values())))
        if self._tail + n > cap:
            new_cap = cap if 2 * (live + n) <= cap else max(16, 4 * (live + n))
            for k, arr in self._cols.items():
                new = arr if new_cap == cap else np.empty(new_cap, dtype=arr.dtype)
                new[:live] = arr[self._head : self._tail]  # overlapping copy is safe: memmove semantics
                self._cols[k] = new
            self._head, self._tail = 0, live
        for k, a in arrays.items():
            self._cols[k][self._tail : self._tail + n] = a
        first = self.base + live
        self._tail += n
        return first

    def pop_front(self, n: int) -> dict[str, np.ndarray]:
        """Remove the ``n`` oldest rows; returns them (views valid until the next append)."""
        if n > len(self):
            raise IndexError(f"cannot pop {n} rows from {len(self)}")
        out = {k: a[self._head : self._head + n] for k, a in self._cols.items()}
        self._head += n
        self.base += n
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base, "cols": {k: self.col(k).copy() for k in self._dtypes}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._cols = {k: np.empty(16, dtype=d) for k, d in self._dtypes.items()}
        self._head = self._tail = 0
        self.base = 0
        cols = state["cols"]
        if len(cols[next(iter(self._dtypes))]):
            self.append(**{k: cols[k] for k in self._dtypes})
        self.base = int(state["base"])


K = TypeVar("K", bound=Hashable)


class InternTable(Generic[K]):
    """Value <-> int id, reference counted: a value is stored once and freed when no row uses it.

    Freed ids are reused (last freed first), so ids stay small and the table deterministic.
    """

    def __init__(self) -> None:
        self._values: list[K | None] = []
        self._refs: list[int] = []
        self._free: list[int] = []
        self._ids: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> K:
        value = self._values[i]
        assert value is not None, f"interned id {i} was freed"
        return value

    def add(self, value: K) -> int:
        """The id of ``value`` (stored if new), with one more reference."""
        i = self._ids.get(value)
        if i is None:
            if self._free:
                i = self._free.pop()
                self._values[i] = value
                self._refs[i] = 0
            else:
                i = len(self._values)
                self._values.append(value)
                self._refs.append(0)
            self._ids[value] = i
        self._refs[i] += 1
        return i

    def add_many(self, values: Iterable[K]) -> np.ndarray:
        return np.array([self.add(v) for v in values], dtype=np.int32)

    def release(self, ids: np.ndarray) -> None:
        """Drop one reference per entry of ``ids``; values left without references are freed."""
        uniq, counts = np.unique(ids, return_counts=True)
        for i, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            self._refs[i] -= c
            if self._refs[i] == 0:
                del self._ids[self[i]]
                self._values[i] = None
                self._free.append(i)

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self._values), "refs": list(self._refs), "free": list(self._free)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._values = list(state["values"])
        self._refs = [int(r) for r in state["refs"]]
        self._free = [int(i) for i in state["free"]]
        self._ids = {v: i for i, v in enumerate(self._values) if v is not None}


class TransitionIndex:
    """Flat FIFO indices of stored transitions, one per group (is_her, goal type); rows are (source id, t).

    Transitions are appended source by source and evicted oldest episode first, so within every group
    the evicted rows are exactly the group's oldest: eviction is a ``pop_front`` per group.
    Implements :class:`sac_glam.buffers.her.TransitionGroups`.
    """

    def __init__(self) -> None:
        self.groups: dict[GroupKey, ColumnFifo] = {}

    @staticmethod
    def _new() -> ColumnFifo:
        return ColumnFifo({"src": np.int64, "t": np.int32})

    def append(self, key: GroupKey, src: int, n: int) -> None:
        """Transitions t = 0..n-1 of source ``src``."""
        if key not in self.groups:
            self.groups[key] = self._new()
        self.groups[key].append(src=np.full(n, src), t=np.arange(n))

    def pop_front(self, key: GroupKey, n: int) -> None:
        self.groups[key].pop_front(n)

    def sizes(self) -> dict[GroupKey, int]:
        # Sorted keys: the mapping from a uniform integer to a transition must not depend on the
        # order in which groups were first created, or a reloaded buffer would draw different batches.
        return {k: len(self.groups[k]) for k in sorted(self.groups) if len(self.groups[k])}

    def draw(
        self, keys: Iterable[GroupKey], count: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` draws, uniform with replacement over the union of the groups ``keys``.

        A draw is an integer j in [0, total); ``searchsorted`` on the cumulative sizes finds its group.
        Example: sizes (3, 5) -> cum (3, 8); j = 4 -> group 1 (the first cum > 4), local row 4 - 3 = 1.
        """
        keys = sorted(k for k in set(keys) if k in self.groups and len(self.groups[k]))
        src_B = np.empty(count, dtype=np.int64)
        t_B = np.empty(count, dtype=np.int32)
        if count == 0:
            return src_B, t_B
        sizes = np.array([len(self.groups[k]) for k in keys], dtype=np.int64)
        if sizes.sum() == 0:
            raise ValueError("cannot sample: no stored transition in the requested groups")
        cum = np.cumsum(sizes)
        j_B = rng.integers(0, cum[-1], size=count)
        g_B = np.searchsorted(cum, j_B, side="right")
        local_B = j_B - (cum[g_B] - sizes[g_B])
        for gi, k in enumerate(keys):
            sel = g_B == gi
            if sel.any():
                src_B[sel] = self.groups[k].col("src")[local_B[sel]]
                t_B[sel] = self.groups[k].col("t")[local_B[sel]]
        return src_B, t_B

    def state_dict(self) -> dict[str, Any]:
        return {"groups": [(k, f.state_dict()) for k, f in self.groups.items()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.groups = {}
        for (her, gtype), s in state["groups"]:
            fifo = self._new()
            fifo.load_state_dict(s)
            self.groups[(bool(her), str(gtype))] = fifo
