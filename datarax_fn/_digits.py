"""scikit-learn's 8x8 handwritten digits, shipped inside the package (UCI, CC BY 4.0).

See ``_data/DIGITS_CITATION.txt`` for the source, license and citation.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

NUM_RECORDS = 1797


def load_digits(split: str = "all") -> dict[str, np.ndarray]:
    """Returns the digits as ``{"image": uint8 (N, 8, 8, 1), "label": int32 (N,)}``.

    Pixels are integers 0..16. ``split`` is ``"all"`` (1,797 records), ``"test"`` (every
    sixth record, indices ``5, 11, 17, ...``: 299 records) or ``"train"`` (the other
    1,498). The records come roughly grouped by writer, so the interleaved split puts
    every writer on both sides. Reads the compressed copy inside the package: offline,
    no scikit-learn needed.

    Arguments:
        split: ``"all"``, ``"train"`` or ``"test"``.

    Returns:
        a dict of NumPy arrays, ready for ``dfn.from_arrays``.

    ```python
    import datarax_fn as dfn
    digits = dfn.load_digits("train")
    assert digits["image"].shape == (1498, 8, 8, 1) and digits["label"].dtype == "int32"
    ```
    """
    test = np.arange(NUM_RECORDS) % 6 == 5
    rows = {"all": slice(None), "train": ~test, "test": test}
    if split not in rows:
        raise ValueError(f"load_digits: split must be one of {sorted(rows)}; got split={split!r}.")
    with resources.files(__package__).joinpath("_data/digits.npz").open("rb") as f, np.load(f) as z:
        image, label = z["image"], z["label"].astype(np.int32)
    return {"image": image[rows[split]], "label": label[rows[split]]}
