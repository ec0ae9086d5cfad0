"""Percentile bootstrap of many small samples at once, with the values of one at a time.

``stats`` aggregates every (configuration, statistic) pair of a sweep over its seeds: for a
1,000-configuration sweep that is ~20,000 tiny samples. One ``scipy.stats.bootstrap`` call
per sample spends its time in overhead, so samples of one size are stacked and resampled
together. The draws depend only on the seed and the sample size, so each stacked row gets
exactly the interval it gets alone (``tests/unit/test_stats.py`` checks it bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import stats as sps

# Resamples per draw: bounds the memory of the pairwise comparisons in probability_of_improvement.
BATCH = 500
# Resampled values held at once when samples are stacked (~16 MB of floats).
MAX_ELEMENTS = 2_000_000


def percentile_bootstrap(data: tuple[np.ndarray, ...], statistic, *, reps: int, confidence: float, seed: int):
    """Percentile bootstrap along the last axis, vectorised; each sample is resampled independently."""
    return sps.bootstrap(
        data,
        statistic,
        n_resamples=reps,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        axis=-1,
        batch=BATCH,
        rng=np.random.default_rng(seed),
    ).confidence_interval


def check_bootstrap_args(reps: int, confidence: float) -> None:
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def as_rows(x: np.ndarray, axis: int, lead: tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` with ``axis`` last, broadcast to ``lead`` leading axes and flattened to 2-D rows.

    NumPy sums a row of a 3-D array in another order than the same row of a 2-D array
    (pairwise from 8 values on), so statistics reduce 2-D rows: a stacked sample's value is
    then the one it has alone, to the last bit.
    """
    x = np.moveaxis(np.asarray(x), axis, -1)
    if lead is not None:
        x = np.broadcast_to(x, (*lead, x.shape[-1]))
    return x.reshape(-1, x.shape[-1])


def same_size_chunks(samples: Sequence[np.ndarray], per_row: int, reps: int) -> Iterator[tuple[int, list[int]]]:
    """``(size, positions)`` of samples of one size, in chunks that keep the resampled values
    (``per_row`` per value of a sample) under ``MAX_ELEMENTS``."""
    sizes: dict[int, list[int]] = {}
    for position, sample in enumerate(samples):
        sizes.setdefault(sample.size, []).append(position)
    for size, positions in sizes.items():
        rows = max(1, MAX_ELEMENTS // (max(size * per_row, 1) * min(reps, BATCH)))
        for start in range(0, len(positions), rows):
            yield size, positions[start : start + rows]
