"""Percentile bootstrap confidence intervals over test items (and over subjects' items).

Each replicate resamples the items with replacement, the same number as there are, and computes
the statistic; the interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the replicates
(``np.quantile``, linear interpolation). With one array per subject, each replicate resamples
every subject's items independently and averages the subjects' statistics: the interval of the
across-subject mean, the subjects held fixed.

The draws are fixed by ``seed``: ``rng = np.random.default_rng(seed)``, then for each array in
turn ``rng.integers(0, n, size=(n_boot, n))`` (row ``b`` is replicate ``b``'s index array), so
that a plain loop over replicates with the same generator reproduces the interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: most indices drawn at once (rows of a replicate block)
_BLOCK = 1 << 22


def _as_list(items) -> tuple[list[np.ndarray], bool]:
    if isinstance(items, np.ndarray) or (isinstance(items, Sequence) and items and np.isscalar(items[0])):
        arrays, single = [np.asarray(items, np.float64)], True
    elif isinstance(items, Sequence):
        arrays, single = [np.asarray(a, np.float64) for a in items], False
    else:
        arrays, single = [np.asarray(items, np.float64)], True
    if not arrays:
        raise ValueError("no item arrays to bootstrap")
    for a in arrays:
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"items must be non-empty 1-d arrays, got shape {a.shape}")
    return arrays, single


def _draws(rng, n: int, n_boot: int):
    """``(rows, n)`` index blocks, together the ``(n_boot, n)`` draw of the module docstring."""
    step = max(1, _BLOCK // n)
    for a in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - a), n))


def bootstrap_ci(items, *, statistic: Callable | None = None, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0, vectorized: bool = False) -> tuple[float, float]:
    """``(lo, hi)``: the percentile bootstrap interval of a statistic of per-item values.

    ``items``: one ``(n,)`` array of per-item values, or a list of such arrays, one per subject
    (module docstring). ``statistic``: ``None`` for the mean (of each subject's resampled items,
    then over subjects); or a callable for statistics that are not means of per-item values
    (corpus BLEU, say), called with the resampled indices and returning the replicate's value:
    ``statistic(idx)`` with ``idx`` an ``(n,)`` int array for a single array, or a list of
    them (one per subject, in order) for a list, combining the subjects itself. With
    ``vectorized=True`` it is called once with all replicates, ``(n_boot, n)`` arrays, and
    returns ``(n_boot,)``. ``items`` then only fixes the numbers of items (and is checked for
    nan). nan items raise :class:`ValueError`, unless every item is nan: ``(nan, nan)``.
    """
    arrays, single = _as_list(items)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: expected 0 < alpha < 1")
    n_boot = int(n_boot)
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot}: expected at least 1")
    nan = [int(np.isnan(a).sum()) for a in arrays]
    if sum(nan) == sum(a.size for a in arrays):
        return (float("nan"), float("nan"))
    if sum(nan):
        raise ValueError(f"{sum(nan)} nan items of {sum(a.size for a in arrays)}: drop or score them first")
    rng = np.random.default_rng(seed)
    if statistic is None:
        reps = np.zeros(n_boot)
        for a in arrays:
            reps += np.concatenate([a[idx].mean(1) for idx in _draws(rng, a.size, n_boot)])
        reps /= len(arrays)
    else:
        idx = [np.concatenate(list(_draws(rng, a.size, n_boot))) for a in arrays]
        arg = idx[0] if single else idx
        if vectorized:
            reps = np.asarray(statistic(arg), np.float64).reshape(-1)
            if reps.size != n_boot:
                raise ValueError(f"vectorized statistic returned {reps.size} values for {n_boot} replicates")
        elif single:
            reps = np.array([statistic(row) for row in idx[0]], np.float64)
        else:
            reps = np.array([statistic([i[b] for i in idx]) for b in range(n_boot)], np.float64)
    if np.isnan(reps).any():
        raise ValueError("the statistic gave nan on some replicates")
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))
