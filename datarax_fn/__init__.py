"""datarax_fn: pure-functional JAX PyTree data sources.

```python
import datarax_fn as dfn
state = dfn.from_arrays({"x": x, "y": y}, shuffle=True, seed=0)
state, batch = dfn.get_batch(state, 128)
```
"""

# --- foundation (lead) ---
from ._shuffle import permute as permute
from ._eager import EagerSource as EagerSource, from_arrays as from_arrays
from ._core import (
    cursor as cursor,
    dataset_info as dataset_info,
    element_spec as element_spec,
    get_batch as get_batch,
    get_batch_at as get_batch_at,
    iterate as iterate,
    num_records as num_records,
    restore_cursor as restore_cursor,
)
from ._jit import DatasetCopyWarning as DatasetCopyWarning, jit_step as jit_step
from ._sharding import data_sharding as data_sharding, get_global_batch as get_global_batch

# --- conversion + hf (hf engineer) ---
from ._convert import decode_text as decode_text
from ._streaming import EndOfStream as EndOfStream, StreamingSource as StreamingSource
from ._loaders.hf import (
    HFEagerConfig as HFEagerConfig,
    HFEagerSource as HFEagerSource,
    HFStreamingConfig as HFStreamingConfig,
    HFStreamingSource as HFStreamingSource,
    from_hf as from_hf,
)

# --- tfds (tfds engineer) ---
from ._loaders.tfds import (
    TFDSEagerConfig as TFDSEagerConfig,
    TFDSEagerSource as TFDSEagerSource,
    TFDSStreamingConfig as TFDSStreamingConfig,
    TFDSStreamingSource as TFDSStreamingSource,
    from_tfds as from_tfds,
)

# --- pipeline (pipeline engineer) ---
from ._stages import (
    apply_to_keys as apply_to_keys,
    cast as cast,
    chain as chain,
    normalize as normalize,
    one_hot as one_hot,
    random_crop as random_crop,
    random_flip as random_flip,
)
from ._stats import Statistics as Statistics, compute_statistics as compute_statistics
from ._pipeline import (
    Pipeline as Pipeline,
    scan as scan,
    scan_epoch as scan_epoch,
    step as step,
    steps_per_epoch as steps_per_epoch,
)
from ._device import collect_to_array as collect_to_array, prefetch_to_device as prefetch_to_device
from ._digits import load_digits as load_digits

__version__ = "0.1.0"
