"""Time types: Arrow timestamps, dates, durations and times -> int64 counts in the declared unit.

Timestamps and durations count the Arrow unit since the epoch (time zones do not change the
count: Arrow stores UTC); dates count days since 1970-01-01; times of day count the unit
since midnight. The int64 then follows the number rule (int32 when it fits, without x64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .columns import is_arrow, plain_arrow


def to_counts(col: Any) -> Any:
    """Returns an Arrow time column as int64 counts (lists of times stay lists); others as given."""
    if not is_arrow(col):
        return _numpy_counts(col)
    import pyarrow as pa  # a dependency of datasets; only Arrow columns reach here

    arr = plain_arrow(col)
    if isinstance(arr, (pa.ListArray, pa.LargeListArray)):
        kind = type(arr)
        return kind.from_arrays(arr.offsets, to_counts(arr.values), mask=arr.is_null() if arr.null_count else None)
    if isinstance(arr, pa.FixedSizeListArray):
        return pa.FixedSizeListArray.from_arrays(to_counts(arr.values), arr.type.list_size)
    if pa.types.is_date64(arr.type):
        arr = arr.cast(pa.date32())
    if pa.types.is_date32(arr.type):
        return arr.cast(pa.int32()).cast(pa.int64())
    if pa.types.is_time32(arr.type):
        return arr.cast(pa.int32()).cast(pa.int64())
    if pa.types.is_timestamp(arr.type) or pa.types.is_duration(arr.type) or pa.types.is_time64(arr.type):
        return arr.cast(pa.int64())
    return arr


def _numpy_counts(col: Any) -> Any:
    if isinstance(col, np.ndarray) and col.dtype.kind in "mM":
        unit = np.datetime_data(col.dtype)[0]
        out = col.view(np.int64)
        return out if unit != "D" else out.astype(np.int64)
    return col

