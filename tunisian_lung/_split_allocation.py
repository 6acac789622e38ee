"""Allocation of patients to splits: seeded order, largest remainder, controlled rounding.

Everything here is exact (``fractions.Fraction``) and ordered by sha256 digests, never by
``hash()`` or a random-number stream, so :mod:`tunisian_lung.splits` gives the same
assignment on every platform and Python version.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import Counter
from fractions import Fraction
from typing import Mapping, Sequence

#: Stratum value of a patient whose stratification column is empty.
UNKNOWN_STRATUM_VALUE = "unknown"

logger = logging.getLogger(__name__)


def order_key(seed: int, *parts: object) -> str:
    """Return the sha256 hex digest of ``seed`` and ``parts`` joined by colons, used as a sort key."""
    text = ":".join(str(part) for part in (seed, *parts))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def largest_remainder(total: int, ratios: Sequence[Fraction], seed: int, tie_key: str) -> list[int]:
    """Split ``total`` into integers proportional to ``ratios`` (Hamilton's method).

    Ties between equal remainders are broken by a seeded sha256 order, not by position.
    """
    shares = [total * ratio for ratio in ratios]
    counts = [int(share) for share in shares]  # shares are non-negative, so int() is floor
    missing = total - sum(counts)
    order = sorted(
        range(len(ratios)),
        key=lambda j: (-(shares[j] - counts[j]), order_key(seed, tie_key, j)),
    )
    for j in order[:missing]:
        counts[j] += 1
    return counts


def controlled_rounding(
    sizes: Sequence[int], ratios: Sequence[Fraction], targets: Sequence[int], seed: int
) -> list[list[int]]:
    """Round the table ``sizes[s] * ratios[j]`` to integers that keep every row sum.

    Every cell is its exact value rounded down or up, and row ``s`` sums to ``sizes[s]``.
    Column ``j`` sums to ``targets[j]`` when such a rounding exists. Otherwise the columns may
    reach the ceiling of their exact sums, so a split can differ from its target by one patient,
    and a warning is logged.
    """
    exact = [[size * ratio for ratio in ratios] for size in sizes]
    floors = [[int(value) for value in row] for row in exact]
    n_cols = len(ratios)
    column_floor = [sum(row[j] for row in floors) for j in range(n_cols)]
    rounded = round_up_cells(exact, floors, [targets[j] - column_floor[j] for j in range(n_cols)], seed)
    if rounded is None:
        column_exact = [sum((row[j] for row in exact), Fraction(0)) for j in range(n_cols)]
        ceilings = [-((-value) // 1) for value in column_exact]
        rounded = round_up_cells(exact, floors, [int(ceilings[j]) - column_floor[j] for j in range(n_cols)], seed)
        if rounded is None:  # pragma: no cover - the exact fractional parts already fit these caps
            raise AssertionError("no rounding of the stratum-by-split table fits the column ceilings")
        logger.warning("split sizes could not match their largest-remainder targets %s exactly", list(targets))
    return rounded


def round_up_cells(
    exact: Sequence[Sequence[Fraction]], floors: Sequence[Sequence[int]], column_caps: Sequence[int], seed: int
) -> list[list[int]] | None:
    """Round up one fractional cell per missing unit of each row, within the column caps.

    This is a bipartite matching: each row needs ``sum(exact) - sum(floors)`` round-ups, each
    column accepts at most its cap, and only cells with a fractional part qualify. It is solved
    with augmenting paths. The result is ``None`` if no such rounding exists.
    """
    n_rows, n_cols = len(exact), len(column_caps)
    row_need = [int(sum(exact[s], Fraction(0))) - sum(floors[s]) for s in range(n_rows)]
    spare = list(column_caps)

    # Candidate cells per row, largest fractional part first, seeded tie-break.
    def preference(row: int, col: int) -> tuple[Fraction, str]:
        return (-(exact[row][col] - floors[row][col]), order_key(seed, "cell", row, col))

    candidates: list[list[int]] = []
    for s in range(n_rows):
        fractional = [j for j in range(n_cols) if exact[s][j] != floors[s][j]]
        candidates.append(sorted(fractional, key=functools.partial(preference, s)))
    increment = [[0] * n_cols for _ in range(n_rows)]

    def augment(row: int, seen_cols: set[int]) -> bool:
        # Depth-first search for an augmenting path from ``row`` to a column with spare capacity.
        for col in candidates[row]:
            if increment[row][col] or col in seen_cols:
                continue
            seen_cols.add(col)
            if spare[col] > 0:
                spare[col] -= 1
                increment[row][col] = 1
                return True
            for other in range(n_rows):
                if increment[other][col] and augment(other, seen_cols):
                    increment[row][col] = 1
                    increment[other][col] = 0
                    return True
        return False

    for s in range(n_rows):
        for _ in range(row_need[s]):
            if not augment(s, set()):
                return None
    return [[floors[s][j] + increment[s][j] for j in range(n_cols)] for s in range(n_rows)]


def assign_strata(
    attributes: Mapping[str, Mapping[str, str]], stratify: Sequence[str], min_size: int
) -> dict[str, tuple[str, ...]]:
    """Return each patient's stratum key after merging strata smaller than ``min_size``.

    From the last column to the first, the small strata that share all earlier columns are
    merged. If together they reach ``min_size`` they become one stratum keyed by those earlier
    columns. Otherwise they join the largest big-enough stratum sharing those columns, or, when
    there is none, they go on to the next round with one column fewer. The key ``()`` is the
    pool of all remaining small strata.

    A small stratum of the first column with a known value (``healthy`` when there are fewer
    healthy patients than folds) is kept as it is. Controlled rounding keeps its count in every
    split within one patient of its share. Merged into ``cancer``, those patients could bunch up
    in some splits. Only first-column values of ``unknown`` are merged.
    """
    keys = {pid: tuple(row[column] for column in stratify) for pid, row in attributes.items()}
    for level in range(len(stratify), 0, -1):
        sizes = Counter(keys.values())
        small = sorted(
            key
            for key, size in sizes.items()
            if len(key) == level and size < min_size and (level > 1 or key[0] == UNKNOWN_STRATUM_VALUE)
        )
        relabel: dict[tuple[str, ...], tuple[str, ...]] = {}
        for prefix in sorted({key[: level - 1] for key in small}):
            members = [key for key in small if key[: level - 1] == prefix]
            merged = sum(sizes[key] for key in members)
            hosts = [
                key
                for key, size in sizes.items()
                if key[: level - 1] == prefix and len(key) >= level - 1 and size >= min_size
            ]
            if merged >= min_size or not hosts:
                target = prefix
            else:
                target = min(hosts, key=lambda key: (-sizes[key], key))
            relabel.update({key: target for key in members})
        keys = {pid: relabel.get(key, key) for pid, key in keys.items()}
    return keys
