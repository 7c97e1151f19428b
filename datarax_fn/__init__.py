"""datarax_fn: pure-functional JAX PyTree data sources.

```python
import numpy as np, datarax_fn as dfn
x, y = np.zeros((100, 4), np.float32), np.arange(100, dtype=np.int32)
state = dfn.from_arrays({"x": x, "y": y}, shuffle=True, seed=0)
state, batch = dfn.get_batch(state, 32)
assert batch["x"].shape == (32, 4)
```
"""

from ._state.contract import (
    Source as Source,
    cursor as cursor,
    dataset_info as dataset_info,
    element_spec as element_spec,
    get_batch as get_batch,
    get_batch_at as get_batch_at,
    get_global_batch as get_global_batch,
    iterate as iterate,
    num_records as num_records,
    restore_cursor as restore_cursor,
)
from ._state.shuffle import permute as permute
from ._eager.source import EagerSource as EagerSource, from_arrays as from_arrays
from ._streaming.source import (
    EndOfStream as EndOfStream,
    StreamingBackend as StreamingBackend,
    StreamingSource as StreamingSource,
    make_streaming as from_backend,
)
from ._streaming.prefetch import StreamClosed as StreamClosed
from ._state.jit import DatasetCopyWarning as DatasetCopyWarning, jit_step as jit_step
from ._eager.global_batch import data_sharding as data_sharding
from ._layout.placement import local_records as local_records
from ._eager.place import from_local_partitions as from_local_partitions, place as place
from ._pipeline.stages import apply_to_keys as apply_to_keys, chain as chain
from ._pipeline.stages import row_keys as row_keys
from ._pipeline.fingerprint import named_stage as named_stage
from ._pipeline.elementwise import cast as cast, normalize as normalize, one_hot as one_hot
from ._pipeline.geometric import random_crop as random_crop, random_flip as random_flip
from ._pipeline.geometric import random_resized_crop as random_resized_crop
from ._pipeline.statistics import Statistics as Statistics
from ._pipeline.pipeline import Pipeline as Pipeline, step as step
from ._pipeline.scan import scan as scan, scan_epoch as scan_epoch, steps_per_epoch as steps_per_epoch
from ._pipeline.statistics import compute_statistics as compute_statistics
from ._pipeline.to_device import (
    collect_to_array as collect_to_array,
    prefetch_to_device as prefetch_to_device,
)
from ._digits import load_digits as load_digits

from ._convert import decode_text as decode_text
from ._loaders.hf import (
    HFEagerConfig as HFEagerConfig,
    HFEagerSource as HFEagerSource,
    HFStreamingConfig as HFStreamingConfig,
    HFStreamingSource as HFStreamingSource,
    from_hf as from_hf,
)
from ._loaders.tfds import (
    TFDSEagerConfig as TFDSEagerConfig,
    TFDSEagerSource as TFDSEagerSource,
    TFDSStreamingConfig as TFDSStreamingConfig,
    TFDSStreamingSource as TFDSStreamingSource,
    from_tfds as from_tfds,
)

__version__ = "0.1.0"
from ._compose.mix import Mixture as Mixture, mix as mix
from ._compose.pack import Packed as Packed, pack as pack
from ._compose.partitioned import Partitioned as Partitioned
