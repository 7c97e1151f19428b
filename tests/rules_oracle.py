"""What the conversion rules (docs/conversion.md) make of a split's reference rows.

Given a schema (``tests/dataset_factory.py``) and the rows a backend's own reader gives, this
computes, per output leaf, the zero-padded array and the ``<leaf>_length`` leaves a source must
hold (rules 3-8), and the reasons a load must raise instead (rules 4, 5, 7, 10) with the option
each error must name as its fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dataset_factory import MODE_CHANNELS, Array, Aud, Bin, Img, Label, Num, Picture, Seq, Str, Struct, decode_image, decode_wav

STREAM_PROBE_ROWS = 7  # test_differential's chunk_size: a stream decides an undeclared image mode from its first chunk


# ----------------------------------------------------------------------------- the schema's leaves


@dataclasses.dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]
    levels: tuple  # per axis after the batch axis: "R" ragged, a fixed size, or "C" image channels
    base: Any

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def textual(self) -> bool:  # text and lists of strings pad to the longest row (rule 5/6)
        return isinstance(self.base, (Str, Bin))


def leaves(spec: Any, path: tuple = (), levels: tuple = ()) -> list[Leaf]:
    """Returns the output leaves of a schema; levels are "R" (ragged), a fixed size, or "C" (channels)."""
    if isinstance(spec, dict):
        return [lf for k, s in spec.items() for lf in leaves(s, (k,), ())]
    if isinstance(spec, Struct):
        return [lf for k, s in spec.fields for lf in leaves(s, path + (k,), levels)]
    if isinstance(spec, Seq):
        return leaves(spec.inner, path, levels + ("R" if spec.length is None else spec.length,))
    own = {Str: ("R",), Bin: ("R",), Aud: ("R",)}.get(type(spec), ())
    if isinstance(spec, Array):
        own = spec.shape
    if isinstance(spec, Img):
        own = (*spec.hw, "C")
    return [Leaf(path, levels + tuple(own), spec)]


def pluck(spec: Any, value: Any, path: tuple) -> Any:
    """Returns the nested per-list values of the leaf at ``path`` inside ``value``."""
    if value is None:
        return None
    if isinstance(spec, Struct):
        return pluck(dict(spec.fields)[path[0]], value[path[0]], path[1:])
    if isinstance(spec, Seq):
        if isinstance(value, dict):  # TFDS gives a list of structs as a struct of lists
            n = len(next(iter(value.values())))
            value = [{k: v[i] for k, v in value.items()} for i in range(n)]
        return [pluck(spec.inner, x, path) for x in value]
    return value


def _seq_depth(leaf: Leaf) -> int:
    """Returns how many leading levels of ``leaf`` are lists (the rest belong to its base value)."""
    own = {Str: 1, Bin: 1, Aud: 1, Img: 3}.get(type(leaf.base), len(getattr(leaf.base, "shape", ())))
    return len(leaf.levels) - own


class Rows:
    """The reference rows of one split and, per leaf, what the rules make of them."""

    def __init__(self, schema: dict, rows: list[dict]):
        self.schema, self.rows, self.n = schema, rows, len(rows)
        self.leaves = leaves(schema)
        self.values = {lf.dotted: [pluck(schema[lf.path[0]], r[lf.path[0]], lf.path[1:]) for r in rows] for lf in self.leaves}
        self.none_rows = {lf.dotted: [i for i, v in enumerate(self.values[lf.dotted]) if v is None] for lf in self.leaves}
        self._sizes: dict[str, list[set[int]]] = {}

    def base_values(self, leaf: Leaf) -> list:
        """Returns every base value of ``leaf`` in the split, flattened across its list levels."""
        out, depth = [], _seq_depth(leaf)

        def walk(v, d):
            if v is None:
                return
            if d == 0:
                out.append(v)
            else:
                for x in v:
                    walk(x, d - 1)

        for v in self.values[leaf.dotted]:
            walk(v, depth)
        return out

    def level_sizes(self, leaf: Leaf) -> list[set[int]]:
        """Returns, per level of ``leaf``, every size that level takes in the split."""
        if leaf.dotted in self._sizes:
            return self._sizes[leaf.dotted]
        seen: list[set[int]] = [set() for _ in leaf.levels]
        depth = _seq_depth(leaf)

        def walk(v, k):
            if v is None or "R" not in leaf.levels[k:]:
                return
            if k == depth:
                for j, d in enumerate(base_array(leaf, v, "L", False).shape):
                    seen[k + j].add(d)
                return
            seen[k].add(len(v))
            for x in v:
                walk(x, k + 1)

        for v in self.values[leaf.dotted]:
            walk(v, 0)
        self._sizes[leaf.dotted] = seen
        return seen

    def needed(self, leaf: Leaf) -> list[int]:
        """Returns the longest length of each ragged level of ``leaf`` (0 for an always-empty level)."""
        return [max(s, default=0) for s, lv in zip(self.level_sizes(leaf), leaf.levels, strict=True) if lv == "R"]

    def equal_lengths(self, leaf: Leaf) -> bool:
        return all(len(s) <= 1 for s in self.level_sizes(leaf))

    def modes(self, leaf: Leaf, first: int | None = None) -> str:
        """Returns the smallest mode holding every image of ``leaf`` (rule 7's promotion), or
        those of its ``first`` rows (a stream's probe)."""
        found = {_image_mode(v) for v in self.values[leaf.dotted][:first] if v is not None}
        colour = bool(found & {"RGB", "RGBA"})
        alpha = bool(found & {"LA", "RGBA"})
        return ("RGB" if colour else "L") + ("A" if alpha else "")

    def stream_mode(self, leaf: Leaf) -> str:
        """Returns the mode a stream holds an undeclared image field in: its probe's (rule 7)."""
        return self.modes(leaf, STREAM_PROBE_ROWS)

    def lossy_rows(self, leaf: Leaf, mode: str) -> list[int]:
        """Returns the rows whose image ``mode`` cannot hold without losing colour or alpha."""
        c, out = MODE_CHANNELS[mode], []
        for i, v in enumerate(self.values[leaf.dotted]):
            if v is None:
                continue
            a = _pixels(v)
            colour = a.shape[2] in (3, 4) and c in (1, 2) and not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))
            alpha = a.shape[2] in (2, 4) and c in (1, 3) and not (a[..., -1] == 255).all()
            if colour or alpha:
                out.append(i)
        return out


def _pixels(v: Any) -> np.ndarray:
    """Returns an image value's pixels as (H, W, C)."""
    if isinstance(v, Picture):
        v = v.pixels if v.pixels.dtype != np.uint8 or not v.encoded else decode_image(v.encoded)
    a = np.asarray(v)
    return a[..., None] if a.ndim == 2 else a


def _image_mode(v: Any) -> str:
    if isinstance(v, Picture):
        return v.mode
    if hasattr(v, "mode"):
        return v.mode
    return {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[np.asarray(v).shape[-1]]


def out_dtype(base: Any, x64: bool) -> np.dtype:
    """Rule 3/4/6/7/8: the output dtype of a base value."""
    if isinstance(base, Label):
        return np.dtype(np.int32)
    if isinstance(base, (Str, Bin)):
        return np.dtype(np.uint8)
    if isinstance(base, Aud):
        return np.dtype(np.float32)
    dt = np.dtype(base.dtype)
    if not x64:
        dt = {np.dtype(np.int64): np.int32, np.dtype(np.uint64): np.uint32, np.dtype(np.float64): np.float32}.get(dt, dt)
    return np.dtype(dt)


def base_array(leaf: Leaf, v: Any, image_mode: str, x64: bool) -> np.ndarray:
    """Returns one base value as the rules convert it (before the output dtype cast)."""
    b = leaf.base
    if isinstance(b, (Str, Bin)):  # rule 6: the UTF-8 bytes (binary: the bytes), a ragged level
        data = v.encode() if isinstance(v, str) else bytes(v)
        return np.frombuffer(data, np.uint8)
    if isinstance(b, Aud):  # rule 8: int16 PCM / 32768, the same for HF WAV bytes and TFDS samples
        if isinstance(v, dict):
            v = decode_wav(v["bytes"])
        return np.asarray(v, np.int16).astype(np.float32) / np.float32(32768)
    if isinstance(b, Img):  # rule 7: the declared mode, else image_mode, else the split's promotion
        mode = b.mode or image_mode
        if isinstance(v, Picture):
            v = v.pixels if b.dtype != "uint8" else decode_image(v.encoded, mode)
        elif isinstance(v, (bytes, np.bytes_)):  # JPEG left encoded by TFDS: PIL's pixels (rule 7)
            v = decode_image(bytes(v), mode)
        elif hasattr(v, "convert"):  # a PIL image from HF's reader
            v = np.asarray(v.convert(mode) if v.mode != mode else v)
        v = np.asarray(v)
        return v[..., None] if v.ndim == 2 else v
    if isinstance(b, Label):  # rule 3 (HF's -1 included)
        return np.asarray(v, np.int64)
    return np.asarray(v, np.dtype(b.dtype))


def overflow_rows(rows: Rows, leaf: Leaf) -> list[int]:
    """Rule 4: rows holding a value that does not fit the no-x64 dtype."""
    if not isinstance(leaf.base, (Num, Array)) or leaf.base.dtype not in ("int64", "uint64", "float64"):
        return []
    bad = []
    for i, v in enumerate(rows.values[leaf.dotted]):
        flat = []
        _flatten(v, flat)
        a = np.asarray(flat, np.dtype(leaf.base.dtype)) if flat else np.zeros(0)
        if leaf.base.dtype == "float64":
            a = a[np.isfinite(a)]
            hit = (np.abs(a) > np.finfo(np.float32).max).any()
        else:
            info = np.iinfo(np.int32 if leaf.base.dtype == "int64" else np.uint32)
            hit = ((a < info.min) | (a > info.max)).any() if a.size else False
        if hit:
            bad.append(i)
    return bad


def _flatten(v: Any, out: list) -> None:
    if v is None:
        return
    if isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim > 0):
        for x in v:
            _flatten(x, out)
    else:
        out.append(v)


# ----------------------------------------------------------------------------- options and rules


@dataclasses.dataclass
class Options:
    """The options a case loads with; the fixes that errors name are added here."""

    max_length: dict = dataclasses.field(default_factory=dict)
    image_mode: dict = dataclasses.field(default_factory=dict)
    exclude_keys: list = dataclasses.field(default_factory=list)
    x64: bool = False

    def kwargs(self) -> dict:
        kw = {"max_length": dict(self.max_length), "image_mode": dict(self.image_mode), "exclude_keys": list(self.exclude_keys)}
        return {k: v for k, v in kw.items() if v}

    def excluded(self, leaf: Leaf) -> bool:
        return any(leaf.dotted == p or leaf.dotted.startswith(p + ".") for p in self.exclude_keys)


@dataclasses.dataclass(frozen=True)
class Issue:
    """A reason the rules demand an error for a leaf, and the fix its message must name."""

    rule: str
    fix: str  # the option the message names: exclude_keys, jax_enable_x64, max_length, image_mode
    rows: tuple[int, ...] = ()  # the global rows the message may name (rules 4 and 10)


def issues(rows: Rows, leaf: Leaf, streaming: bool, opts: Options) -> list[Issue]:
    """Returns why loading ``leaf`` with ``opts`` must raise (empty: it must load)."""
    if opts.excluded(leaf):
        return []
    found = []
    if rows.none_rows[leaf.dotted]:
        found.append(Issue("rule 10 (None values raise)", "exclude_keys", tuple(rows.none_rows[leaf.dotted])))
    bad = overflow_rows(rows, leaf)
    if bad and not opts.x64:
        found.append(Issue("rule 4 (64-bit value out of the 32-bit range)", "jax_enable_x64", tuple(bad)))
    if "R" in leaf.levels and leaf.dotted not in opts.max_length:
        if streaming:
            found.append(Issue("rule 5 (streaming: every ragged leaf needs max_length)", "max_length"))
        elif not leaf.textual and not rows.equal_lengths(leaf):
            found.append(Issue("rule 5 (eager: ragged non-text rows of unequal length need max_length)", "max_length"))
    if isinstance(leaf.base, Img) and leaf.base.mode is None and streaming and leaf.dotted not in opts.image_mode:
        # Rule 7: a stream decides the mode from its probe, and raises for a later image it
        # cannot hold without loss.
        lossy = rows.lossy_rows(leaf, rows.stream_mode(leaf))
        if lossy:
            found.append(Issue("rule 7 (streaming: an image the probed mode cannot hold without loss)", "image_mode", (lossy[0],)))
    return found


def fix_max_length(rows: Rows, leaf: Leaf) -> int | tuple[int, ...]:
    need = tuple(max(1, d) for d in rows.needed(leaf))
    return need[0] if len(need) == 1 else need


def _length_name(name: str, k: int) -> str:
    return f"{name}_length" if k == 0 else f"{name}_length_{k}"


def expected_leaves(rows: Rows, opts: Options, got: dict, streaming: bool = False) -> dict[tuple, np.ndarray]:
    """Returns ``{output path: array}`` the rules give for the split, length leaves included.

    A level that is empty in every row may pad to 0 or 1 (``got`` says which was chosen).
    """
    out = {}
    for leaf in rows.leaves:
        if opts.excluded(leaf):
            continue
        ml = opts.max_length.get(leaf.dotted)
        arr, lens = _padded(rows, leaf, opts, getattr(got.get(leaf.path), "shape", ()), streaming)
        out[leaf.path] = arr
        if ml is not None or leaf.textual or not rows.equal_lengths(leaf):  # rule 5: no length leaf when stacked
            for k, a in enumerate(lens):
                out[leaf.path[:-1] + (_length_name(leaf.path[-1], k),)] = a
    return out


def _padded(rows: Rows, leaf: Leaf, opts: Options, shape: tuple, streaming: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """Returns the zero-padded array of ``leaf`` and one length array per ragged level (rule 5)."""
    mode = None
    if isinstance(leaf.base, Img):
        mode = leaf.base.mode or opts.image_mode.get(leaf.dotted) or (rows.stream_mode(leaf) if streaming else rows.modes(leaf))
    ml = opts.max_length.get(leaf.dotted)
    ragged = list((ml,) if isinstance(ml, int) else ml) if ml is not None else rows.needed(leaf)
    dims, r = [], 0
    for i, lv in enumerate(leaf.levels):
        if lv == "R":
            dims.append(ragged[r] or (1 if shape[i + 1:i + 2] == (1,) else 0))
            r += 1
        else:
            dims.append(MODE_CHANNELS[mode] if lv == "C" else lv)
    dt = out_dtype(leaf.base, opts.x64)
    arr = np.zeros((rows.n, *dims), dt)
    rpos = [i for i, lv in enumerate(leaf.levels) if lv == "R"]
    lens = [np.zeros((rows.n, *dims[:p]), np.int32) for p in rpos]
    depth = _seq_depth(leaf)

    def fill(v, k, idx):
        if k == depth:
            a = base_array(leaf, v, mode, opts.x64).astype(dt)
            for j, d in enumerate(a.shape):
                if leaf.levels[k + j] == "R":
                    lens[rpos.index(k + j)][idx] = d
                if d > dims[k + j]:
                    raise AssertionError(f"{leaf.dotted}: a value of shape {a.shape} does not fit the padded shape {dims[k:]}")
            arr[idx + tuple(slice(0, d) for d in a.shape)] = a
            return
        if leaf.levels[k] == "R":
            lens[rpos.index(k)][idx] = len(v)
        for j, x in enumerate(v):
            fill(x, k + 1, idx + (j,))

    for i, v in enumerate(rows.values[leaf.dotted]):
        fill(v, 0, (i,))
    return arr, lens
