"""Feature conversion: backend columns (Arrow, NumPy, Python lists) to JAX-ready NumPy arrays.

The loaders call only these names. The HF and TFDS mappers turn declared features into
fields; ``select`` prunes them by dotted paths; a ``Converter`` decides every output dtype and
shape at construction and converts chunks. The rules are on the docs page ``conversion.md``.
"""

from .converter import Converter
from .estimate import estimate_nbytes
from .fields import (
    Audio,
    Field,
    Image,
    Label,
    Sequence,
    Struct,
    Tensor,
    Text,
    Time,
    Unsupported,
    check_key_options,
    read_paths,
    select,
)
from .hf_features import fields_from_hf
from .memory import owned_arrays
from .text import decode_text
from .tfds_features import fields_from_tfds

__all__ = [
    "Audio", "Converter", "Field", "Image", "Label", "Sequence", "Struct", "Tensor", "Text", "Time", "Unsupported",
    "check_key_options", "decode_text", "estimate_nbytes", "fields_from_hf", "fields_from_tfds", "owned_arrays",
    "read_paths", "select",
]
