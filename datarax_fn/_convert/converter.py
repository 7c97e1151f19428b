"""The Converter: every output dtype and shape decided at construction, then chunks converted.

A ``filter`` (a mask of the rows to keep) and a ``transform`` may change a chunk's row count; a
stream then counts its positions by input row and records how far into a chunk's outputs it
is (``changes_rows``), see ``_streaming.source``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from . import images
from . import transform as tf
from .columns import child, rows_of, slice_rows, take_rows
from .fields import all_paths, select
from .plan import Leaf, Options, check_image_mode, check_leaves, check_max_length, plan
from .rules import RULES

_CHUNK = 4096  # rows per transform call when a whole split is converted at once
logger = logging.getLogger("datarax_fn")


@dataclasses.dataclass
class _Context:
    """What a rule may read beyond its column: threads, probed image shapes, the metadata."""

    num_threads: int | None
    image_shape: dict[str, tuple]
    meta: dict[str, Any]
    static: bool


def column_at(tree: Mapping[str, Any], keys: tuple[str, ...], row0: int, path: str) -> Any:
    col = tree[keys[0]]
    for i, k in enumerate(keys[1:], 1):
        col = child(col, k, ".".join(keys[:i]), row0)
    return col


def _put(tree: dict, keys: tuple[str, ...], value: Any) -> None:
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return bool(value)


class Converter:
    """Returns NumPy batches from backend columns, with every leaf's dtype and shape fixed now.

    Arguments:
      fields: the selected schema (``select(fields_from_hf(...), ...)``).
      max_length: pad size of ragged levels: an int, or ``{dotted path: int or tuple of ints,
        one per ragged level}``. Longer rows raise unless ``truncate``.
      truncate: cut rows longer than ``max_length`` (text at a UTF-8 character boundary).
      image_mode: 'L', 'LA', 'RGB', 'RGBA' (or 'I;16', 'I', 'F') for images whose feature
        declares no channels; one for all or ``{path: mode}``.
      transform: ``dict -> dict`` applied to each chunk in the user view, before the rules; it
        may return more or fewer rows than it was given.
      filter: ``dict -> bool mask`` of a chunk in the user view: rows where it is False are
        dropped before ``transform`` (and before the rules).
      probe: a first chunk of columns; with ``transform`` its output fixes the output spec,
        and in static mode it fixes image sizes the schema leaves open.
      static: streaming: every shape must be known now (ragged leaves need ``max_length``).
      num_threads: image decoding threads (None: up to 8).

    Without ``static``, each call converts a whole split: text pads to its longest row and
    undeclared image channels are promoted over all of its images.
    """

    def __init__(self, fields: Mapping[str, Any], *, max_length: Any = None, truncate: bool = False,
                 image_mode: Any = None, transform: Callable[[dict], dict] | None = None, probe: Any = None,
                 static: bool = False, num_threads: int | None = None,
                 filter: Callable[[dict], Any] | None = None):
        if not isinstance(fields, Mapping) or not fields:
            raise ValueError(f"Converter: fields must be a non-empty dict of fields; got {fields!r}.")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be a function dict -> dict; got {type(transform).__name__}.")
        if filter is not None and not callable(filter):
            raise TypeError(f"filter must be a function dict of columns -> bool mask of the rows to keep; got "
                            f"{type(filter).__name__}.")
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer))):
            raise TypeError(f"num_threads must be None or an int; got {num_threads!r}.")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1; got {num_threads!r}.")
        self.fields = dict(fields)
        self.transform = transform
        self.filter = filter
        # Whether a chunk's output rows may differ from its input rows: a stream then resumes by
        # (input chunk, outputs of it served). A transform decides on the probe; a filter always does.
        self.changes_rows = filter is not None
        self.static = _check_bool("static", static)
        paths = all_paths(self.fields)
        self.options = Options(
            None if transform is not None else check_max_length(max_length, paths),  # else: the output's
            _check_bool("truncate", truncate), check_image_mode(image_mode, self.fields),
            self.static and transform is None,  # a transform's input may stay ragged
        )
        self.num_threads = None if num_threads is None else int(num_threads)
        self.leaves: list[Leaf] = plan(self.fields, self.options)
        self.meta: dict[str, Any] = {
            leaf.path: {"sampling_rate": leaf.field.sampling_rate} for leaf in self.leaves if leaf.kind == "audio"
        }
        self._ctx = _Context(self.num_threads, {}, self.meta, self.static)
        self._out: Converter | None = None
        self._probe_out = None
        if transform is not None:
            self._build_output(probe, max_length, truncate)
            return
        check_leaves(self.leaves)
        if self.static:
            self._probe_images(probe)

    def _build_output(self, probe: Any, max_length: Any, truncate: bool) -> None:
        if probe is None:
            raise ValueError("Converter: a transform needs probe= (a first chunk of columns) to fix the output spec.")
        rows = rows_of(probe[next(iter(self.fields))])
        out = self._apply(probe, 0)
        if out is None:  # the filter kept none of the probe's rows: its spec comes from them all, unfiltered
            out = self._transform(self._user(probe, 0))
        else:
            # Kept for the first conversion, which usually starts with these very rows: the
            # transform then runs once per record, as a transform with side effects expects.
            self._probe_out: tuple | None = (probe, rows, out)
        self.changes_rows = self.changes_rows or tf.out_rows(out) != rows
        self._probe_rows = rows
        self.out_fields = {k: tf.infer(v, k) for k, v in out.items()}
        self._out = Converter(self.out_fields, max_length=max_length, truncate=truncate, probe=out if self.static else None,
                              static=self.static, num_threads=self.num_threads)

    def _probe_images(self, probe: Any) -> None:
        for i, leaf in enumerate(self.leaves):
            if leaf.kind != "image":
                continue
            if leaf.mode is None and leaf.dims[2] is None:
                if probe is None:
                    raise ValueError(
                        f"field {leaf.path!r}: the feature declares no channel count (HF Image() without mode), and "
                        f"streaming needs one shape for every batch. Pass image_mode={{{leaf.path!r}: 'RGB'}} (or 'L', "
                        "'LA', 'RGBA'; every image is converted to it as PIL's Image.convert does), or probe= (a first "
                        "chunk) to decide it from the first images."
                    )
                self.leaves[i] = leaf = self._probe_mode(leaf, column_at(probe, leaf.keys, 0, leaf.path))
            if None in leaf.dims[:2]:
                if probe is None:
                    raise ValueError(
                        f"field {leaf.path!r}: the feature declares no image size; streaming needs probe= "
                        "(a first chunk) to fix it, or a transform that resizes to one size."
                    )
                col = column_at(probe, leaf.keys, 0, leaf.path)
                first = RULES["image"](leaf, slice_rows(col, 0, 1), 0, False, self._ctx)[0]
                self._ctx.image_shape[leaf.path] = first.shape[1:]

    def _probe_mode(self, leaf: Leaf, col: Any) -> Leaf:
        """Returns ``leaf`` with the mode its first images decide (``images.probe_image_mode``)."""
        k = min(images.PROBE_IMAGES, rows_of(col))
        mode = images.probe_image_mode(images.decode_all(slice_rows(col, 0, k), leaf.path, 0, self.num_threads), leaf.path)
        channels, dtype = images.MODES[mode]
        logger.info("field %r declares no image mode; the stream holds its images as %r, decided from its first %d "
                    "images (later ones are converted only without loss; image_mode= sets it).", leaf.path, mode, k)
        self.meta.setdefault(leaf.path, {}).update(image_mode=mode, image_mode_probed_rows=k)
        dims = (*leaf.dims[:2], channels)
        return dataclasses.replace(leaf, mode=mode, dims=dims, sizes=dims, dtype=np.dtype(dtype), probed=k)

    def _user(self, columns: Mapping[str, Any], row0: int) -> dict:
        view: dict = {}
        for leaf in self.leaves:
            _put(view, leaf.keys, tf.user_column(leaf, column_at(columns, leaf.keys, row0, leaf.path), row0, self._ctx))
        return view

    def _kept(self, view: dict, row0: int, rows: int) -> np.ndarray:
        """Returns the rows of a chunk (in the user view) that the filter keeps, as indices."""
        mask = self.filter(view)
        if type(mask).__module__.startswith("jax"):
            mask = np.asarray(mask)
        where = f"rows {row0}..{row0 + rows - 1}"
        if not isinstance(mask, (np.ndarray, list, tuple)):
            raise TypeError(f"filter returned a {type(mask).__name__} for {where}; return a NumPy bool array of one "
                            f"value per row (True: keep), e.g. lambda chunk: chunk['length'] >= 16.")
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (rows,):
            raise ValueError(
                f"filter returned a {mask.dtype} array of shape {mask.shape} for {where}; it must return a bool "
                f"array of shape ({rows},), one value per row of the chunk (True: keep). Compare to get one, e.g. "
                "chunk['length'] >= 16, or np.asarray(mask, bool) for a mask of 0s and 1s."
            )
        return np.flatnonzero(mask)

    def _transform(self, view: dict) -> dict:
        out = self.transform(view)
        if not isinstance(out, Mapping) or not out:
            raise TypeError(f"transform must return a non-empty dict of columns; got {type(out).__name__}.")
        return dict(out)

    def _apply(self, columns: Mapping[str, Any], row0: int) -> dict | None:
        """Returns the transform's output for a chunk, after the filter; None when the filter kept no row."""
        view = self._user(columns, row0)
        if self.filter is not None:
            rows = rows_of(columns[self.leaves[0].keys[0]])
            idx = self._kept(view, row0, rows)
            if not len(idx):
                return None
            if len(idx) < rows:
                view = take_rows(view, idx)
        return self._transform(view)

    def _check_output(self, out: dict, row0: int, rows: int) -> None:
        # No rows (an expansion that gave none) have no spec to compare.
        got = {k: tf.infer(v, k) for k, v in out.items()} if tf.out_rows(out) else self.out_fields
        if got != self.out_fields:
            diff = sorted(k for k in set(got) | set(self.out_fields) if got.get(k) != self.out_fields.get(k))
            raise ValueError(
                f"transform output field(s) {diff} at rows {row0}..{row0 + rows - 1} differ from the probe's "
                f"({[self.out_fields.get(k) for k in diff]} vs {[got.get(k) for k in diff]}). The output spec is "
                "fixed by the first chunk: return the same keys, dtypes and shapes every time (a list of arrays "
                "for ragged rows, with max_length)."
            )
        if self.static and not self.changes_rows and tf.out_rows(out) != rows:
            raise ValueError(
                f"transform changed the row count at rows {row0}..{row0 + rows - 1} ({rows} in, {tf.out_rows(out)} "
                f"out), though it kept it on the stream's first {self._probe_rows} rows; the stream decided there "
                "that it counts positions by record. Pass filter= (a mask of the rows to keep; "
                "filter=lambda chunk: np.ones(len(chunk[key]), bool) keeps all) so that the stream counts "
                "positions by chunk and resumes exactly whatever the transform returns."
            )

    def __call__(self, columns: Mapping[str, Any], row0: int = 0) -> dict[str, Any]:
        """Returns the converted chunk: a dict (nested for structs) of NumPy arrays, batch axis first.

        ``row0`` is the global row of the chunk's first row; errors name ``row0 + i``.
        """
        missing = [k for k in {leaf.keys[0] for leaf in self.leaves} if k not in columns]
        if missing:
            raise KeyError(f"Converter: fields {missing} have no column; columns are {sorted(columns)}.")
        if self._out is not None:
            return self._call_transform(columns, row0)
        if self.filter is not None:
            return self._call_filter(columns, row0)
        return self._convert(columns, row0)

    def _convert(self, columns: Mapping[str, Any], row0: int) -> dict[str, Any]:
        out: dict = {}
        for leaf in self.leaves:
            col = column_at(columns, leaf.keys, row0, leaf.path)
            arrays = RULES[leaf.kind](leaf, col, row0, self.options.truncate, self._ctx)
            _put(out, leaf.keys, arrays[0])
            for name, lengths in zip(leaf.length_keys(), arrays[1:]):
                _put(out, (*leaf.keys[:-1], name), lengths)
        return out

    def _pieces(self, columns: Mapping[str, Any], start: int = 0) -> Any:
        """Yields ``(lo, hi, rows lo:hi of columns)``: one piece in static mode, ``_CHUNK`` rows otherwise."""
        n = rows_of(columns[self.leaves[0].keys[0]])
        step = max(n if self.static else _CHUNK, 1)
        for lo in range(start, max(n, 1), step):
            hi = min(lo + step, n)
            yield lo, hi, ({k: slice_rows(v, lo, hi) for k, v in columns.items()} if (lo, hi) != (0, n) else columns)

    def _call_filter(self, columns: Mapping[str, Any], row0: int) -> dict[str, Any]:
        # The filter sees the user view; the rules convert the kept rows of the raw columns.
        kept = [lo + self._kept(self._user(piece, row0 + lo), row0 + lo, hi - lo) for lo, hi, piece in self._pieces(columns)]
        idx = np.concatenate(kept)
        if not len(idx):
            return self._empty(row0, rows_of(columns[self.leaves[0].keys[0]]))
        if len(idx) == rows_of(columns[self.leaves[0].keys[0]]):
            return self._convert(columns, row0)
        try:
            return self._convert(take_rows(columns, idx), row0)
        except (ValueError, TypeError):
            # The kept rows are not consecutive: find the one at fault under its own row number.
            for i in idx.tolist():
                self._convert(take_rows(columns, np.array([i])), row0 + i)
            raise

    def _empty(self, row0: int, rows: int) -> dict[str, Any]:
        """Returns a chunk of no records (a filter dropped them all, or an expansion gave none)."""
        if not self.static:
            raise ValueError(
                f"the filter/transform kept none of the rows {row0}..{row0 + rows - 1}; an eager source needs at "
                "least one record. Check the filter's condition (True keeps a row)."
            )
        return jax.tree.map(lambda s: np.zeros((0, *s.shape), s.dtype), self.element_spec)

    def _call_transform(self, columns: Mapping[str, Any], row0: int) -> dict[str, Any]:
        n = rows_of(columns[self.leaves[0].keys[0]])
        parts = []
        probe, self._probe_out = self._probe_out, None
        start = 0
        if probe is not None and 0 < probe[1] <= n and _same_rows(columns, probe[0], probe[1], self.fields):
            parts.append(probe[2])
            start = probe[1]
        for lo, hi, chunk in self._pieces(columns, start):
            out = self._apply(chunk, row0 + lo)
            if out is not None:
                self._check_output(out, row0 + lo, hi - lo)
                parts.append(out)
        parts = [p for p in parts if tf.out_rows(p)]
        if not parts:
            return self._empty(row0, n)
        return self._out(tf.concat(parts), row0)

    @property
    def element_spec(self) -> dict[str, Any]:
        """Returns one ``jax.ShapeDtypeStruct`` per output leaf, for ONE record.

        Raises when a shape depends on the data (eager without ``max_length`` or a declared image size).
        """
        if self._out is not None:
            return self._out.element_spec
        spec: dict = {}
        for leaf in self.leaves:
            shape = self._ctx.image_shape.get(leaf.path, leaf.sizes) if leaf.kind == "image" else leaf.sizes
            inner: tuple = ()
            if leaf.kind == "audio":
                ch = leaf.field.channels
                inner = (ch,) if ch and ch > 1 else ()
            if None in shape:
                raise ValueError(
                    f"field {leaf.path!r}: its shape {shape} depends on the data; pass max_length (or, for images, "
                    "static=True with a probe), or read the spec from the converted arrays."
                )
            _put(spec, leaf.keys, jax.ShapeDtypeStruct((*shape, *inner), leaf.dtype))
            for d, name in enumerate(leaf.length_keys()):
                level = [i for i, r in enumerate(leaf.ragged) if r][d]
                _put(spec, (*leaf.keys[:-1], name), jax.ShapeDtypeStruct(tuple(shape[:level]), np.int32))
        return spec


def _same_rows(columns: Mapping[str, Any], probe: Mapping[str, Any], k: int, keys: Any) -> bool:
    """Returns whether the first ``k`` rows of ``columns`` equal ``probe`` in every column of ``keys``."""
    import pyarrow as pa  # every backend that probes hands Arrow, NumPy or Python columns

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, Mapping) or isinstance(b, Mapping):
            return isinstance(a, Mapping) and isinstance(b, Mapping) and a.keys() == b.keys() and all(
                same(a[key], b[key]) for key in a)
        a = slice_rows(a, 0, k)
        if isinstance(a, (pa.Array, pa.ChunkedArray)) and isinstance(b, (pa.Array, pa.ChunkedArray)):
            chunked = [x if isinstance(x, pa.ChunkedArray) else pa.chunked_array([x]) for x in (a, b)]
            return chunked[0].type == chunked[1].type and chunked[0].equals(chunked[1])
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype != object:
            return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        try:
            return type(a) is type(b) and len(a) == len(b) and bool(a == b if isinstance(a, list) else list(a) == list(b))
        except Exception:  # values that do not compare: not provably the same rows
            return False

    return all(key in columns and key in probe and same(columns[key], probe[key]) for key in keys)


def converter_for(fields_or_conv: Any) -> Converter:
    """Returns ``fields_or_conv`` as a Converter (a dict of fields gets the default options)."""
    return fields_or_conv if isinstance(fields_or_conv, Converter) else Converter(select(fields_or_conv))
