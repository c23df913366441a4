"""FundusMatcher: brute-force L2 matching with cv2.BFMatcher semantics, on torch.

``match`` with ``crossCheck=True`` returns exactly what
``cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match`` returns (mutual nearest
neighbours, ordered by ``queryIdx``, distance = Euclidean distance in float32), up to
the order of candidates whose distances tie within float rounding.

Distances are ranked from ``|a|^2 + |b|^2 - 2 a.b`` computed in chunks of query rows on
the matcher's device (CUDA if available); with ``crossCheck`` and no ratio test one pass
over the distance matrix gives both directions (each chunk's row minima, and a running
minimum per column), and the reported distances are recomputed exactly as ``|a - b|``
for the selected pairs.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

_CHUNK = 4096  # query rows per distance block (CUDA)
_CPU_CHUNK = 256
"""Query rows per distance block on the CPU: a block of 256 x 3 000 distances (3 MB) stays
in cache and its buffer is reused, where a 36 MB block was freshly allocated (page
faults) and read three times from memory: mutual matching of 3 000 x 3 000 descriptors
57-59 -> 31-34 ms at 1 thread of an AMD EPYC (31-34 -> 15-18 ms at 2), the same matches."""
_ARGMIN_TOPK = 8  # k up to which the CPU top-k takes k row minima instead of sorting


def validate_descriptors(desc: Any, name: str) -> np.ndarray:
    """Check a descriptor matrix: ``(N, D)`` float32 (float64 is converted), finite.

    Raises:
        TypeError: not a numpy array or not floating point.
        ValueError: not 2-D or non-finite values.
    """
    if not isinstance(desc, np.ndarray):
        kind = "None" if desc is None else type(desc).__name__
        raise TypeError(f"{name} must be a float32 numpy.ndarray of shape (N, D), got {kind}")
    if desc.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32, got {desc.dtype}")
    if desc.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {desc.shape}")
    if desc.size and not np.isfinite(desc).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(desc, dtype=np.float32)


def _validate_pair(desc1: Any, desc2: Any) -> tuple[np.ndarray, np.ndarray]:
    d1 = validate_descriptors(desc1, "descriptors1")
    d2 = validate_descriptors(desc2, "descriptors2")
    if len(d1) and len(d2) and d1.shape[1] != d2.shape[1]:
        raise ValueError(
            f"descriptors1 and descriptors2 must have the same width, "
            f"got {d1.shape[1]} and {d2.shape[1]}"
        )
    return d1, d2


class FundusMatcher:
    """Nearest-neighbour matcher for float descriptors (L2), cv2.DescriptorMatcher-like.

    Create with :meth:`create`. ``match`` returns the nearest train descriptor of each
    query, restricted to mutual nearest neighbours when ``crossCheck`` and to
    ``d1 < ratio * d2`` (Lowe's ratio test) when ``ratio`` is set.
    """

    def __init__(
        self,
        crossCheck: bool = True,
        ratio: float | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if ratio is not None and not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1] or None, got {ratio!r}")
        self.crossCheck = bool(crossCheck)
        self.ratio = ratio
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )

    @classmethod
    def create(
        cls,
        crossCheck: bool = True,
        ratio: float | None = None,
        device: torch.device | str | None = None,
    ) -> FundusMatcher:
        """Create a matcher (cross-check on by default; optional Lowe ratio; device)."""
        return cls(crossCheck=crossCheck, ratio=ratio, device=device)

    def getDefaultName(self) -> str:
        return "DescriptorMatcher.FundusMatcher"

    def __getstate__(self) -> dict[str, Any]:
        return {"crossCheck": self.crossCheck, "ratio": self.ratio, "device": str(self.device)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        device = state["device"]
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            device = "cpu"
        self.__init__(state["crossCheck"], state["ratio"], device)

    def match(self, queryDescriptors: Any, trainDescriptors: Any) -> list[cv2.DMatch]:
        """Best match of each query descriptor.

        Args:
            queryDescriptors: ``(N1, D)`` float32.
            trainDescriptors: ``(N2, D)`` float32.

        Returns:
            List of ``cv2.DMatch`` (``queryIdx`` into descriptors1, ``trainIdx`` into
            descriptors2, ``distance`` = L2), sorted by ``queryIdx``; ``[]`` when either
            side is empty.
        """
        d1, d2 = _validate_pair(queryDescriptors, trainDescriptors)
        query, train = self._indices(d1, d2)
        dist = _exact_distances(d1[query], d2[train])
        return as_dmatches(query, train, dist)

    def match_indices(
        self, queryDescriptors: Any, trainDescriptors: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The matches of :meth:`match` as arrays, without building ``cv2.DMatch``
        objects or their distances (``register()`` wants indices: 3 000 DMatch objects
        and their exact distances cost 3-5 ms a pair).

        Returns:
            ``(query, train)``: int64 ``(M,)`` indices into the query and train
            descriptors, by ``queryIdx`` (the same pairs, in the same order, as
            :meth:`match`).
        """
        return self._indices(*_validate_pair(queryDescriptors, trainDescriptors))

    def _indices(self, d1: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query, train)`` int64 indices of the matches of validated descriptors."""
        if not len(d1) or not len(d2):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if self.crossCheck and self.ratio is None:
            query, train = self._mutual_nearest(d1, d2)
        else:
            k = 2 if self.ratio is not None else 1
            idx12, dist12 = self._knn(d1, d2, k)
            keep = np.ones(len(d1), bool)
            if self.ratio is not None and idx12.shape[1] > 1:
                keep &= dist12[:, 0] < self.ratio * dist12[:, 1]
            if self.crossCheck:
                idx21, _ = self._knn(d2, d1, 1)
                keep &= idx21[idx12[:, 0], 0] == np.arange(len(d1))
            query = np.flatnonzero(keep)
            train = idx12[query, 0]
        return query.astype(np.int64, copy=False), train.astype(np.int64, copy=False)

    def knnMatch(
        self, queryDescriptors: Any, trainDescriptors: Any, k: int
    ) -> list[list[cv2.DMatch]]:
        """The ``k`` nearest train descriptors of every query (no cross-check, no ratio).

        Same as ``cv2.BFMatcher(cv2.NORM_L2).knnMatch``: one list per query, sorted by
        distance, with ``min(k, N2)`` entries; ``[]`` when either side is empty.
        """
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        d1, d2 = _validate_pair(queryDescriptors, trainDescriptors)
        if not len(d1) or not len(d2):
            return []
        idx, _ = self._knn(d1, d2, int(k))
        dist = _exact_distances(np.repeat(d1, idx.shape[1], axis=0), d2[idx.ravel()])
        dist = dist.reshape(idx.shape)
        return [
            [cv2.DMatch(q, int(t), float(d)) for t, d in zip(row_i, row_d, strict=True)]
            for q, (row_i, row_d) in enumerate(zip(idx, dist, strict=True))
        ]

    def _mutual_nearest(self, d1: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query, train)`` indices of the mutual nearest neighbours, one pass.

        Each chunk of query rows gives its rows' nearest train row (and that distance)
        and lowers a running minimum distance per train row (values only, which is
        cheap). A query is mutual when its own distance is that train row's minimum: the
        same float computation, so equality is exact. Exact ties keep the lowest query
        index, as ``cv2.BFMatcher`` does.
        """
        a = torch.from_numpy(d1).to(self.device)
        b = torch.from_numpy(d2).to(self.device)
        a_sq, b_sq = (a * a).sum(1), (b * b).sum(1)
        nn12 = torch.empty(len(a), dtype=torch.long, device=self.device)
        best12 = torch.empty(len(a), dtype=a.dtype, device=self.device)
        best21 = torch.full((len(b),), float("inf"), dtype=a.dtype, device=self.device)
        chunk = _block_rows(self.device)
        block = torch.empty((min(chunk, len(a)), len(b)), dtype=a.dtype, device=self.device)
        for start in range(0, len(a), chunk):
            q = a[start : start + chunk]
            sq = torch.addmm(b_sq[None], q, b.t(), alpha=-2.0, out=block[: len(q)])
            sq.add_(a_sq[start : start + len(q), None])
            nn = _row_argmin(sq)
            nn12[start : start + len(q)] = nn
            best12[start : start + len(q)] = sq.gather(1, nn[:, None])[:, 0]
            best21 = torch.minimum(best21, sq.amin(dim=0))
        query = (best12 <= best21[nn12]).nonzero(as_tuple=True)[0].cpu().numpy()
        train = nn12.cpu().numpy()[query]
        _, first = np.unique(train, return_index=True)  # exact ties: the lowest query wins
        keep = np.sort(first)
        return query[keep], train[keep]

    def _knn(self, d1: np.ndarray, d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices ``(N1, k')`` and approximate distances of the k nearest rows of d2."""
        k = min(k, len(d2))
        a = torch.from_numpy(d1).to(self.device)
        b = torch.from_numpy(d2).to(self.device)
        b_sq = (b * b).sum(1)
        idx, dist = [], []
        chunk = _block_rows(self.device)
        for start in range(0, len(a), chunk):
            q = a[start : start + chunk]
            sq = ((q * q).sum(1, keepdim=True) + b_sq[None] - 2.0 * q @ b.t()).clamp_min_(0)
            val, ind = _stable_topk(sq, k)
            idx.append(ind.cpu())
            dist.append(val.sqrt().cpu())
        return torch.cat(idx).numpy(), torch.cat(dist).numpy()


def as_dmatches(query: np.ndarray, train: np.ndarray, distance: np.ndarray) -> list[cv2.DMatch]:
    """``cv2.DMatch(query[i], train[i], distance[i])`` for every ``i`` (``(M,)`` arrays).

    The constructor is mapped over Python lists: half the time of a comprehension
    converting numpy scalars one by one (0.64 against 1.37 ms for 1 400 matches).
    """
    return list(map(cv2.DMatch, query.tolist(), train.tolist(), distance.tolist()))


def _block_rows(device: torch.device) -> int:
    """Query rows per distance block: :data:`_CPU_CHUNK` on the CPU, else :data:`_CHUNK`."""
    return _CPU_CHUNK if device.type == "cpu" else _CHUNK


def _row_argmin(sq: torch.Tensor) -> torch.Tensor:
    """Index of each row's minimum, the first on ties (``(N, M)`` -> ``(N,)`` int64).

    On the CPU by numpy (``torch.min(dim=1)`` with indices is ~9x slower there: 15.6 against
    1.7 ms for 3 000 x 3 000, 2 threads of an AMD EPYC, one run); elsewhere ``torch.argmin``.
    """
    if sq.device.type == "cpu":
        return torch.from_numpy(sq.numpy().argmin(axis=1))
    return sq.argmin(dim=1)


def _stable_topk(sq: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest ``k`` per row; exact ties go to the lower index (like cv2.BFMatcher).

    On the CPU, for ``k <= _ARGMIN_TOPK``, ``k`` rounds of each row's first minimum, each
    taken out (set to inf) before the next: the same values and indices as the first
    ``k`` of a stable sort, without sorting whole rows (``knnMatch(k=2)`` of 3 000 x
    3 000 descriptors: 370 -> 56 ms at 2 threads; cv2.BFMatcher 86 ms). ``sq`` is
    overwritten there (the caller's scratch block).
    """
    if k == 1:
        ind = _row_argmin(sq)[:, None]  # first occurrence on ties
        return sq.gather(1, ind), ind
    if sq.device.type == "cpu" and k <= _ARGMIN_TOPK:
        work = sq.numpy()
        rows = np.arange(len(work))
        vals = np.empty((len(work), k), work.dtype)
        inds = np.empty((len(work), k), np.int64)
        for j in range(k):
            inds[:, j] = work.argmin(axis=1)
            vals[:, j] = work[rows, inds[:, j]]
            work[rows, inds[:, j]] = np.inf
        return torch.from_numpy(vals), torch.from_numpy(inds)
    val, ind = torch.sort(sq, dim=1, stable=True)
    return val[:, :k], ind[:, :k]


def _exact_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance ``|a_i - b_i|`` in float32, shape (N,)."""
    return np.sqrt(np.square(a - b, dtype=np.float32).sum(axis=1, dtype=np.float32))
