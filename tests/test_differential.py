"""Differential fuzz: every leaf ``from_hf`` / ``from_tfds`` give equals the backend's own reader.

Hypothesis draws a schema (numbers of every dtype, ClassLabel, string, binary, fixed and ragged
lists nested two levels, structs, lists of structs, fixed-shape arrays, PNG/JPEG images of every
mode and dtype, int16 WAV audio, None) and 1-40 rows, builds real datasets on disk
(``tests/dataset_factory.py``: HF parquet + ``save_to_disk``, a TFDS builder in ``tfrecord`` and
``array_record``), loads the whole split eager and streaming, and compares every leaf with:

* HF: the python rows of ``datasets.load_dataset("parquet", ...)`` (images as PIL, audio bytes
  through ``wave``, since HF's audio decoder needs torchcodec);
* TFDS: ``tfds.as_numpy(tfds.load(...))`` (tfrecord) and ``tfds.data_source(...)``
  (array_record); JPEG through PIL on the stored bytes (rule 7);
* the generated values themselves, for the same data built as HF and as TFDS (identical arrays).

``tests/rules_oracle.py`` turns the reference rows into what docs/conversion.md promises: the
zero-padded arrays, their ``<leaf>_length`` leaves (rule 5), the dtypes (rules 3-8); every output
leaf, padding included, must equal it exactly, and match ``element_spec`` (rule 1). A load may instead raise ValueError/TypeError naming the field, when the
rules demand an error (None, int64 overflow without x64, ragged without ``max_length``); the test then applies the fix the message names (``exclude_keys``,
``jax_enable_x64``, ``max_length``, ``image_mode``) and compares again.

Damaged and hostile images (one bit flipped, the file cut short, a header declaring 60000 x
60000 pixels) are loaded every HF way: each gives HF's pixels, or a ValueError naming the
field, and the row where HF's reader refuses the file; never other pixels. TFDS files are
damaged too (a tfrecord or array_record file flipped or cut, or a damaged image inside it):
each gives the TFDS reader's values, or an error naming the file or the field and row, where
the reader refuses. A file rewritten mid-stream gives the old data's batches, then an error
naming it.

CI runs 84 fixed (derandomized) examples, to keep the suite within its time: 40 HF, 15 TFDS,
10 HF-vs-TFDS, 8 damaged HF, 8 damaged TFDS (4 of them written out), 3 rewritten. Run the long,
random fuzz with ``pytest -m fuzz tests/test_differential.py`` (``DFN_FUZZ_EXAMPLES`` examples
per test, default 300, with shrinking). ``DFN_FUZZ_REPORT=file`` appends every failing case to
``file`` and goes on, instead of stopping at the first one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import re
import shutil
import struct
import tempfile
import zlib
from typing import Any

import chex
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from dataset_factory import (
    MODE_CHANNELS, NUM_DTYPES, Array, Aud, Img, Label, Num, Picture, Seq, Str, Bin, Struct,
    build_hf, build_tfds, decode_image, encode_image,
)
from rules_oracle import STREAM_PROBE_ROWS, Options, Rows, expected_leaves, fix_max_length, issues, overflow_rows

LONG = int(os.environ.get("DFN_FUZZ_EXAMPLES", "300"))
REPORT = os.environ.get("DFN_FUZZ_REPORT")


def _settings(ci: int, long: bool) -> settings:
    """CI: a fixed, derandomized set of examples and no shrinking (each step rebuilds datasets)."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if long and not REPORT else [])
    return settings(max_examples=LONG if long else ci, deadline=None, derandomize=not long, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- strategies

def _num_values(dtype: str, hf: bool):
    """Returns a strategy for one value; 64-bit values often leave the 32-bit range (rule 4)."""
    t = np.dtype(dtype).type
    if dtype == "bool":
        return st.booleans().map(t)
    if dtype.startswith("float"):  # TFDS stores float64 as float32, so it only holds float32 values
        wide = st.floats(width=int(dtype[5:]) if hf else min(32, int(dtype[5:])))
        if dtype == "float64" and hf:
            wide = st.one_of(wide, st.floats(3.5e38, 1e308), st.floats(-1e308, -3.5e38))
        return wide.map(t)
    info = np.iinfo(dtype)
    top = int(info.max) if dtype != "uint64" else 2**63 - 1  # HF's from_dict fails on larger nested uint64
    values = st.one_of(st.integers(max(info.min, -3), 3), st.integers(int(info.min), top))
    if dtype in ("int64", "uint64"):
        values = st.one_of(values, st.integers(2**32, top), st.integers(int(info.min), -(2**31) - 1) if info.min else st.nothing())
    return values.map(t)


def _values(spec: Any, hf: bool):
    """Returns a strategy for one canonical value of ``spec``."""
    if isinstance(spec, Num):
        return _num_values(spec.dtype, hf)
    if isinstance(spec, Label):
        return st.integers(-1 if hf else 0, len(spec.names) - 1)
    if isinstance(spec, Str):
        return st.text(max_size=6)
    if isinstance(spec, Bin):
        return st.binary(max_size=6)
    if isinstance(spec, Seq):
        size = {"min_size": spec.length, "max_size": spec.length} if spec.length else {"max_size": 3}
        return st.lists(_values(spec.inner, hf), **size)
    if isinstance(spec, Struct):
        return st.fixed_dictionaries({k: _values(s, hf) for k, s in spec.fields})
    if isinstance(spec, Array):
        return st.integers(0, 2**32 - 1).map(lambda s: _random_array(s, spec.shape, spec.dtype))
    if isinstance(spec, Img):
        return st.tuples(st.sampled_from(spec.modes), st.integers(0, 2**32 - 1)).map(lambda a: _picture(spec, *a))
    return st.integers(0, 2**32 - 1).map(_clip)


def _random_array(seed: int, shape: tuple, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith("float"):
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)


def _picture(spec: Img, mode: str, seed: int) -> Picture:
    rng = np.random.default_rng(seed)
    shape = (*spec.hw, MODE_CHANNELS[mode])
    if spec.dtype == "float32":
        return Picture(rng.standard_normal(shape).astype(np.float32), b"", mode)
    pixels = rng.integers(0, np.iinfo(spec.dtype).max, shape, endpoint=True).astype(spec.dtype)
    if spec.dtype != "uint8":
        return Picture(pixels, b"", mode)
    encoded = encode_image(pixels[..., 0] if mode == "L" else pixels, spec.fmt)
    return Picture(decode_image(encoded), encoded, mode)


def _clip(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32767, int(rng.integers(0, 12)), endpoint=True).astype(np.int16)


_leaf_specs = st.one_of(
    st.sampled_from(NUM_DTYPES).map(Num),
    st.integers(1, 4).map(lambda k: Label(tuple(f"c{i}" for i in range(k)))),
    st.just(Str()),
    st.just(Bin()),
    st.tuples(st.tuples(st.integers(1, 3), st.integers(1, 3)), st.sampled_from(NUM_DTYPES)).map(lambda a: Array(*a)),
)
_lengths = st.one_of(st.none(), st.integers(1, 3))


def _struct(children):
    return st.lists(children, min_size=1, max_size=3).map(lambda cs: Struct(tuple((f"c{i}", c) for i, c in enumerate(cs))))


def _nested_specs(backend: str):
    """Returns a strategy for nested fields. TFDS reads back lists of lists only when both are ragged."""
    inner = st.builds(Seq, _leaf_specs, _lengths)
    ragged = _lengths if backend == "hf" else st.none()
    two_levels = st.builds(Seq, st.builds(Seq, _leaf_specs, ragged), ragged)
    return st.one_of(_leaf_specs, inner, two_levels, _struct(st.one_of(_leaf_specs, inner)),
                     st.builds(Seq, _struct(_leaf_specs), _lengths))


_modes = st.sampled_from(tuple(MODE_CHANNELS))


@st.composite
def _image_specs(draw, backend: str, jpeg: bool = False):
    hw = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    if jpeg:
        mode = draw(st.sampled_from(["L", "RGB"]))
        return Img(mode, (mode,), hw, "uint8", "jpeg")
    if backend == "hf":  # 8-bit rows of any modes: converted to the declared mode, else promoted (rule 7)
        return Img(draw(st.one_of(st.none(), _modes)), tuple(sorted(draw(st.sets(_modes, min_size=1)))), hw)
    dtype = draw(st.sampled_from(["uint8", "uint16", "float32"])) if backend == "tfds" else "uint8"
    # TFDS float images are single-channel; neither tf.image nor PIL decodes 16-bit grey+alpha.
    mode = "L" if dtype == "float32" else draw(st.sampled_from(["L", "RGB", "RGBA"]) if dtype == "uint16" else _modes)
    return Img(mode, (mode,), hw, dtype)


@st.composite
def datasets(draw, backend: str):
    """Returns ``(schema, rows)``; ``backend`` is "hf" (None values), "tfds", or "both" (no None)."""
    nested = _nested_specs(backend)
    kinds = st.one_of(nested, _image_specs(backend), _image_specs(backend, jpeg=True),
                      st.sampled_from([8000, 16000]).map(Aud))
    specs = draw(st.lists(st.one_of(nested, nested, kinds), min_size=1, max_size=4))
    schema = {f"f{i}_{type(s).__name__.lower()}": s for i, s in enumerate(specs)}
    n = draw(st.one_of(st.integers(1, 6), st.integers(1, 40)))
    columns = {}
    for i, (k, s) in enumerate(schema.items()):
        values = _values(s, backend == "hf")
        if backend == "hf" and i > 0 and draw(st.integers(0, 9)) == 0:  # a nullable column (rule 10)
            values = st.one_of(values, st.none())
        columns[k] = draw(st.lists(values, min_size=n, max_size=n))
    return schema, [{k: columns[k][r] for k in schema} for r in range(n)]


# ----------------------------------------------------------------------------- loading


def _flat(tree: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    if isinstance(tree, dict):
        return {p: v for k, sub in tree.items() for p, v in _flat(sub, prefix + (k,)).items()}
    return {prefix: tree}


@contextlib.contextmanager
def _x64(on: bool):
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", on)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def _chunk_option(config: type) -> str:
    names = {f.name for f in dataclasses.fields(config)}
    return next(n for n in ("chunk_size", "read_chunk_size") if n in names)


CHUNK = STREAM_PROBE_ROWS  # several chunks per split, so nothing can be decided from the first one (rule 1)


def from_tfds(name: str, data_dir: str, streaming: bool, **options: Any) -> Any:
    """Returns ``dfn.from_tfds`` in the asked mode, through ``streaming=`` or the older ``eager=``."""
    if "streaming" in inspect.signature(dfn.from_tfds).parameters:
        return dfn.from_tfds(name, "train", data_dir=data_dir, streaming=streaming, **options)
    return dfn.from_tfds(name, "train", data_dir=data_dir, eager=not streaming, **options)


@dataclasses.dataclass(frozen=True)
class Built:
    """One generated split on disk in every form, with its reference rows per form."""

    hf: dict | None
    tfds: tuple[str, dict] | None
    cache: str

    def load(self, form: str, streaming: bool, opts: Options, **extra: Any) -> Any:
        kw = {**opts.kwargs(), **extra}
        if form in ("parquet", "disk"):
            if streaming:
                kw[_chunk_option(dfn.HFStreamingConfig)] = CHUNK
            if form == "parquet":
                return dfn.from_hf("parquet", "train", data_files=self.hf["parquet"], cache_dir=self.cache, streaming=streaming, **kw)
            return dfn.from_hf(self.hf["disk"], "train", streaming=streaming, **kw)
        if streaming:
            kw[_chunk_option(dfn.TFDSStreamingConfig)] = CHUNK
        return from_tfds(self.tfds[0], self.tfds[1][form], streaming, **kw)


def read_split(state: Any, n: int, streaming: bool, shuffled: bool = False) -> dict[tuple, np.ndarray]:
    """Returns the whole epoch as ``{path: array}`` and checks it against ``element_spec`` (rule 1)."""
    try:
        if streaming or shuffled:
            _, batch = dfn.get_batch(state, n)
        else:
            batch = state.data
        got = {p: np.asarray(v) for p, v in _flat(batch).items()}
        spec = _flat(dfn.element_spec(state))
    finally:
        if hasattr(state, "close"):
            state.close()
    for p, a in got.items():
        s = spec.get(p)
        if s is None or tuple(s.shape) != a.shape[1:] or np.dtype(s.dtype) != a.dtype:
            raise AssertionError(f"rule 1: leaf {'.'.join(p)} is {a.dtype}{a.shape[1:]} per record but element_spec says {s}")
    return got


def compare(got: dict, want: dict, where: str) -> None:
    """Raises naming the first leaf whose shape, dtype or values differ."""
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise AssertionError(f"{where}: leaves missing {['.'.join(p) for p in missing]}, unexpected {['.'.join(p) for p in extra]} "
                             f"(rules 5/6: <leaf>_length only for padded levels)")
    for p, w in want.items():
        g, name = got[p], ".".join(p)
        if g.dtype != w.dtype or g.shape != w.shape:
            raise AssertionError(f"{where}: leaf {name} is {g.dtype}{g.shape}, expected {w.dtype}{w.shape}")
        if not np.array_equal(g, w, equal_nan=w.dtype.kind == "f"):
            bad = np.argwhere(~((g == w) | ((g != g) & (w != w)) if w.dtype.kind == "f" else g == w))[0]
            raise AssertionError(f"{where}: leaf {name} differs at {tuple(bad)}: got {g[tuple(bad)]!r}, expected {w[tuple(bad)]!r}")


def _paths(rows: Rows) -> list[str]:
    out = set()
    for leaf in rows.leaves:
        out.update(".".join(leaf.path[:i]) for i in range(1, len(leaf.path) + 1))
    return sorted(out, key=len, reverse=True)


def load_and_check(built: Built, rows: Rows, form: str, streaming: bool, opts: Options) -> tuple[Options, dict]:
    """Returns the final options and leaves of one load that matched the rules, applying named fixes."""
    where = f"{form} {'streaming' if streaming else 'eager'}"
    opts = dataclasses.replace(opts, max_length=dict(opts.max_length), image_mode=dict(opts.image_mode),
                               exclude_keys=list(opts.exclude_keys))
    for _ in range(len(rows.leaves) + 4):
        try:
            with _x64(opts.x64):
                got = read_split(built.load(form, streaming, opts), rows.n, streaming)
        except (ValueError, TypeError) as err:
            opts = _apply_fix(rows, streaming, opts, err, where)
            continue
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001 (any other error is itself the finding)
            raise AssertionError(f"{where}: {type(err).__name__} (not ValueError/TypeError): {err}") from err
        for leaf in rows.leaves:
            for issue in issues(rows, leaf, streaming, opts):
                raise AssertionError(f"{where}: {issue.rule}: leaf {leaf.dotted} loaded without the error the rule demands")
        compare(got, expected_leaves(rows, opts, got, streaming), f"{where} {opts.kwargs()} x64={opts.x64}")
        return opts, got
    raise AssertionError(f"{where}: still failing after applying every named fix; options {opts}")


def _apply_fix(rows: Rows, streaming: bool, opts: Options, err: Exception, where: str) -> Options:
    msg = str(err)
    named = next((p for p in _paths(rows) if re.search(rf"(?<![\w.]){re.escape(p)}(?![\w])", msg)), None)
    if named is None:
        raise AssertionError(f"{where}: {type(err).__name__} names no field: {msg}") from err
    under = [lf for lf in rows.leaves if lf.dotted == named or lf.dotted.startswith(named + ".")]
    pending = [(lf, i) for lf in under for i in issues(rows, lf, streaming, opts)]
    if not pending:
        raise AssertionError(f"{where}: no rule demands an error for {named!r} with {opts.kwargs()}, got: {msg}") from err
    # Construction-time fixes first: their messages may offer exclude_keys as an alternative.
    order = ("max_length", "image_mode", "jax_enable_x64", "exclude_keys")
    usable = sorted([(lf, i) for lf, i in pending if i.fix in msg], key=lambda p: order.index(p[1].fix))
    if not usable:
        raise AssertionError(f"{where}: {pending[0][1].rule} for {named!r}: the error names no fix "
                             f"({sorted({i.fix for _, i in pending})}): {msg}") from err
    leaf, issue = usable[0]
    if issue.rows and not any(int(r) in issue.rows for r in re.findall(r"\brows?\D{0,4}(\d+)", msg)):
        raise AssertionError(f"{where}: {issue.rule} for {named!r}: the error names none of the global rows {issue.rows}: {msg}") from err
    if issue.fix == "jax_enable_x64":
        opts.x64 = True
    elif issue.fix == "exclude_keys":
        opts.exclude_keys.append(leaf.path[0])  # the None is the whole top-level value
    elif issue.fix == "image_mode":
        opts.image_mode[leaf.dotted] = rows.modes(leaf)
    else:
        for lf, i in usable:
            if i.fix == "max_length":
                opts.max_length[lf.dotted] = fix_max_length(rows, lf)
    return opts


def check_permutation(built: Built, rows: Rows, form: str, streaming: bool, opts: Options, ordered: dict, seed: int) -> None:
    """A shuffled epoch holds exactly the ordered epoch's records."""
    with _x64(opts.x64):
        got = read_split(built.load(form, streaming, opts, shuffle=True, seed=seed), rows.n, streaming, shuffled=True)

    def records(tree):
        keys = sorted(tree)
        return sorted(b"|".join(tree[k][i].tobytes() for k in keys) for i in range(rows.n))

    if sorted(got) != sorted(ordered) or records(got) != records(ordered):
        raise AssertionError(f"{form} {'streaming' if streaming else 'eager'} shuffle=True seed={seed}: not a permutation of the ordered epoch")


# ----------------------------------------------------------------------------- the backends' own readers


def _plain(x: Any) -> Any:
    """Returns a reader's value with ragged tensors as lists and nested dicts kept."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if hasattr(x, "to_list"):
        return x.to_list()
    return x


def hf_reference(built: Built, schema: dict) -> list[dict]:
    """Returns HF's python rows of the parquet file (images as PIL, audio left encoded)."""
    import datasets as hd  # heavy backend

    ds = hd.load_dataset("parquet", data_files=built.hf["parquet"], split="train", cache_dir=built.cache)
    for k, s in schema.items():
        if isinstance(s, Aud):  # HF's audio decoder needs torchcodec: read the WAV bytes with `wave`
            ds = ds.cast_column(k, hd.Audio(sampling_rate=s.sampling_rate, decode=False))
    return list(ds)


def tfds_reference(built: Built, schema: dict, form: str) -> list[dict]:
    """Returns ``tfds.as_numpy(tfds.load(...))`` (tfrecord) or ``tfds.data_source`` rows (array_record).

    JPEG images stay encoded and PIL decodes them (rule 7: one JPEG decoder for every backend),
    and so do grey+alpha PNGs, which tf.image cannot decode. ``tfds.data_source`` decodes images
    with PIL, which cannot hold 16-bit colour, so its other PNGs are decoded by the feature's own
    TensorFlow decoder, as ``tfds.load`` does.
    """
    import tensorflow_datasets as tfds  # heavy backend

    name, dirs = built.tfds
    images = {k: s for k, s in schema.items() if isinstance(s, Img)}
    by_pil = {k for k, s in images.items() if s.fmt == "jpeg" or s.mode == "LA"}
    skip = {k: tfds.decode.SkipDecoding() for k in images if k in by_pil or form == "array_record"}
    if form == "tfrecord":
        return [_plain(r) for r in tfds.as_numpy(tfds.load(name, split="train", data_dir=dirs[form], decoders=skip or None))]
    src = tfds.data_source(name, split="train", data_dir=dirs[form], decoders=skip or None)
    features = tfds.builder(name, data_dir=dirs[form]).info.features
    rows = [_plain(src[i]) for i in range(len(src))]
    for r in rows:
        for k in images.keys() - by_pil:
            r[k] = features[k].decode_example(r[k]).numpy()
    return rows


# ----------------------------------------------------------------------------- the properties

HF_FORMS = [("parquet", False), ("parquet", True), ("disk", False), ("disk", True)]
TFDS_FORMS = [("tfrecord", False), ("tfrecord", True), ("array_record", False), ("array_record", True)]


class Findings:
    """Collects failing cases: raised at the end, or appended to ``DFN_FUZZ_REPORT``."""

    def __init__(self, schema: dict, n: int):
        self.head = f"schema {schema} rows {n}"
        self.failures: list[str] = []

    @contextlib.contextmanager
    def case(self):
        try:
            yield
        except AssertionError as err:
            self.failures.append(str(err).splitlines()[0][:600])

    def done(self) -> None:
        if not self.failures:
            return
        text = "\n".join([self.head, *(f"  {f}" for f in self.failures)])
        if REPORT:
            with open(REPORT, "a") as f:
                f.write(text + "\n")
        else:
            raise AssertionError(text)


def _own_reader_case(backend: str, case: tuple) -> None:
    """Loads one split every way and compares it with the backend's reader; one form also shuffled."""
    (schema, rows), shuffled_form, seed = case  # shuffled_form > 3: no shuffled run (it costs a compile)
    forms = HF_FORMS if backend == "hf" else TFDS_FORMS
    findings = Findings(schema, len(rows))
    with tempfile.TemporaryDirectory() as root:
        if backend == "hf":
            built = Built(build_hf(root, schema, rows), None, os.path.join(root, "cache"))
            refs = dict.fromkeys(("parquet", "disk"), Rows(schema, hf_reference(built, schema)))
        else:
            built = Built(None, build_tfds(root, schema, rows), root)
            refs = {form: Rows(schema, tfds_reference(built, schema, form)) for form in ("tfrecord", "array_record")}
        for i, (form, streaming) in enumerate(forms):
            with findings.case():
                opts, got = load_and_check(built, refs[form], form, streaming, Options())
                if i == shuffled_form:
                    check_permutation(built, refs[form], form, streaming, opts, got, seed)
    findings.done()


def _same_data_case(case: tuple) -> None:
    """Builds one split as HF and as TFDS; all eight loads must equal the generated values and each other."""
    schema, rows = case
    findings = Findings(schema, len(rows))
    canonical = Rows(schema, rows)
    # Options every form needs (rules 4, 5): the arrays must then be identical across backends.
    opts = Options(max_length={lf.dotted: fix_max_length(canonical, lf) for lf in canonical.leaves if "R" in lf.levels},
                   x64=any(overflow_rows(canonical, lf) for lf in canonical.leaves))
    with tempfile.TemporaryDirectory() as root:
        built = Built(build_hf(root, schema, rows), build_tfds(root, schema, rows), os.path.join(root, "cache"))
        outputs = {}
        for form, streaming in HF_FORMS + TFDS_FORMS:
            with findings.case():
                _, outputs[(form, streaming)] = load_and_check(built, canonical, form, streaming, opts)
        first = next(iter(outputs), None)
        for other in outputs:
            with findings.case():
                try:
                    chex.assert_trees_all_equal(outputs[first], outputs[other])
                except AssertionError as err:
                    raise AssertionError(f"same data: {first} and {other} give different arrays: {str(err)[:300]}") from err
    findings.done()


def _run(request: Any, strategy: Any, body: Any, ci_examples: int, examples: tuple = ()) -> None:
    """Runs ``body`` over ``strategy``: the explicit ``examples`` first, then drawn ones."""
    long = "fuzz" in (request.config.getoption("markexpr") or "")
    test = given(strategy)(body)
    for case in examples:
        test = example(case)(test)
    settings(_settings(ci_examples, long))(test)()


@pytest.mark.fuzz
def test_hf_loads_equal_hf_rows(request):
    """Parquet and save_to_disk, eager and streaming, against HF's python rows (rules 1-8, 10)."""
    _run(request, st.tuples(datasets("hf"), st.integers(0, 15), st.integers(0, 2**31 - 1)),
         lambda case: _own_reader_case("hf", case), 40)


@pytest.mark.fuzz
def test_tfds_loads_equal_tfds_readers(request):
    """tfrecord and array_record, eager and streaming, against tfds.as_numpy / tfds.data_source."""
    _run(request, st.tuples(datasets("tfds"), st.integers(0, 15), st.integers(0, 2**31 - 1)),
         lambda case: _own_reader_case("tfds", case), 15)


@pytest.mark.fuzz
def test_same_data_gives_same_arrays_in_hf_and_tfds(request):
    """HF, TFDS tfrecord and TFDS array_record give identical arrays, JPEG and audio included."""
    _run(request, datasets("both"), _same_data_case, 10)


# ----------------------------------------------------------------------------- damaged and hostile files

_BOMB_SIDE = 60_000  # 3.6e9 pixels declared: over 2 * PIL.Image.MAX_IMAGE_PIXELS


def _damaged(data: bytes, kind: str, at: float) -> bytes:
    """Returns ``data`` with one bit flipped, cut short, or declaring a bomb's size (``at``: where)."""
    if kind == "flip":
        bit = int(at * (len(data) * 8 - 1))
        out = bytearray(data)
        out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    if kind == "cut":
        return data[: 1 + int(at * (len(data) - 2))]
    side = struct.pack(">II", _BOMB_SIDE, _BOMB_SIDE)
    if data[:8] == b"\x89PNG\r\n\x1a\n":  # IHDR's size, its CRC rewritten: a well-formed header
        ihdr = data[12:16] + side + data[24:29]
        return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    return data[: sof + 5] + struct.pack(">HH", _BOMB_SIDE, _BOMB_SIDE) + data[sof + 9:]


@st.composite
def damaged_splits(draw):
    """Returns ``(schema, rows, damaged row)``: 1-4 images of one field, one of them damaged."""
    fmt = draw(st.sampled_from(["png", "jpeg"]))
    modes = ("L", "RGB") if fmt == "jpeg" else tuple(MODE_CHANNELS)
    hw = (draw(st.integers(1, 16)), draw(st.integers(1, 16)))
    n = draw(st.integers(1, 4))
    rows = []
    for _ in range(n):
        mode = draw(st.sampled_from(modes))
        pixels = _picture(Img(None, modes, hw), mode, draw(st.integers(0, 2**32 - 1))).pixels
        rows.append({"im": Picture(pixels, encode_image(pixels[..., 0] if mode == "L" else pixels, fmt), mode)})
    bad = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from(["flip", "flip", "cut", "bomb"]))
    data = _damaged(rows[bad]["im"].encoded, kind, draw(st.floats(0, 1)))
    rows[bad] = {"im": Picture(rows[bad]["im"].pixels, data, rows[bad]["im"].mode)}
    return {"im": Img(None, modes, hw, "uint8", fmt)}, rows, bad, kind


def _hf_row_images(built: Built) -> list[Any]:
    """Returns HF's decoded image of each row, or the exception its reader raises for that row."""
    import datasets as hd  # heavy backend

    ds = hd.load_dataset("parquet", data_files=built.hf["parquet"], split="train", cache_dir=built.cache)
    out = []
    for i in range(len(ds)):
        try:
            out.append(ds[i]["im"])
        except Exception as err:  # noqa: BLE001 (any refusal of the reference reader)
            out.append(err)
    return out


def _damaged_case(case: tuple) -> None:
    """Loads a split holding one damaged image every HF way: HF's values, or a ValueError naming
    the field (and, where HF's reader refuses the image, its row); never other values."""
    schema, rows, bad, kind = case
    findings = Findings(schema, len(rows))
    with tempfile.TemporaryDirectory() as root:
        built = Built(build_hf(root, schema, rows), None, os.path.join(root, "cache"))
        ref = _hf_row_images(built)
        refused = isinstance(ref[bad], Exception)
        for form, streaming in HF_FORMS:
            where = f"{kind} at row {bad}: {form} {'streaming' if streaming else 'eager'} (HF {'refuses' if refused else 'reads'} it)"
            with findings.case():
                try:
                    got = read_split(built.load(form, streaming, Options()), len(rows), streaming)
                except ValueError as err:
                    named_row = re.search(rf"\brow {bad}\b", str(err))
                    if "'im'" not in str(err) or (refused and not named_row):
                        raise AssertionError(f"{where}: the error names not the field and row: {err}") from err
                    continue
                if refused:
                    raise AssertionError(f"{where}: returned pixels for an image HF's reader refuses ({ref[bad]!r})")
                # Rule 7's promotion over HF's images (palette and CMYK count as colour, as decoded).
                found = {_EIGHT_BIT.get(r.mode, r.mode) for r in ref}
                if not found <= set(MODE_CHANNELS):
                    raise AssertionError(f"{where}: returned pixels for modes {found} that need image_mode")
                mode = ("RGB" if found & {"RGB", "RGBA"} else "L") + ("A" if found & {"LA", "RGBA"} else "")
                want = np.stack([np.asarray(r.convert(mode)).reshape(r.size[1], r.size[0], -1) for r in ref])
                compare(got, {("im",): want}, where)
    findings.done()


_EIGHT_BIT = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


@pytest.mark.fuzz
def test_damaged_and_hostile_images_give_hf_values_or_a_clear_error(request):
    """Bit flips, truncation and bombs (a few KB declaring 3.6e9 pixels), in PNG and JPEG."""
    _run(request, damaged_splits(), _damaged_case, 8)


# ----------------------------------------------------------------------------- damaged TFDS files
#
# What is right where the readers disagree: the TFDS reader of the file format is the reference
# for what is refused (tf.data with TensorFlow's image decoders for tfrecord; tfds.data_source,
# which decodes with OpenCV, for array_record). Where it refuses a record, a load must raise a
# clear error. Where it reads every record, a load gives its values (JPEG: PIL's decode of the
# stored bytes, rule 7) or raises a clear error: datarax_fn decodes every backend the same way and
# checks every PNG CRC and the adler32 (PIL's and libpng's checks), so it may refuse an image that
# one reference decoder reads, but never returns pixels where the reference refuses.


def _image_rows(draw, fmt: str, mode: str, hw: tuple, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        pixels = _picture(Img(mode, (mode,), hw), mode, draw(st.integers(0, 2**32 - 1))).pixels
        rows.append({"im": Picture(pixels, encode_image(pixels[..., 0] if mode == "L" else pixels, fmt), mode)})
    return rows


@st.composite
def damaged_tfds_splits(draw):
    """Returns ``(schema, rows, file format, kind, where, bad row)``: 1-6 PNG or JPEG images in
    one tfrecord or array_record file; the file (``kind`` "file flip"/"file cut") or one image
    ("image flip"/"image cut"/"image bomb") is damaged at ``where`` (0..1)."""
    fmt = draw(st.sampled_from(["png", "jpeg"]))
    mode = draw(st.sampled_from(["L", "RGB"] if fmt == "jpeg" else list(MODE_CHANNELS)))
    hw = (draw(st.integers(1, 16)), draw(st.integers(1, 16)))
    n = draw(st.integers(1, 6))
    rows = _image_rows(draw, fmt, mode, hw, n)
    kind = draw(st.sampled_from(["file flip", "file flip", "file cut", "image flip", "image cut", "image bomb"]))
    where, bad = draw(st.floats(0, 1)), draw(st.integers(0, n - 1))
    if kind.startswith("image"):
        im = rows[bad]["im"]
        rows[bad] = {"im": Picture(im.pixels, _damaged(im.encoded, kind[6:], where), mode)}
    container = draw(st.sampled_from(["tfrecord", "array_record"]))
    return {"im": Img(mode, (mode,), hw, "uint8", fmt)}, rows, container, kind, where, bad


def _damage_file(path: str, kind: str, where: float) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(_damaged(data, "flip" if kind == "file flip" else "cut", where))


def _pil_or_error(data: bytes) -> Any:
    try:
        return decode_image(data)
    except Exception as err:  # noqa: BLE001 (any refusal of the reference decoder)
        return err


def _tfds_reader_rows(built: Built, container: str, la: bool) -> list[Any]:
    """Returns the TFDS reader's decoded image of each row, or the exception it raises there
    (tf.data stops at its first error: every later row is that error too). tf.image cannot
    decode grey+alpha (``la``) PNGs at all: PIL decodes the bytes tf.data reads, as in tfds_reference."""
    import tensorflow_datasets as tfds  # heavy backend

    name, dirs = built.tfds
    out: list[Any] = []
    try:
        if container == "tfrecord":
            skip = {"im": tfds.decode.SkipDecoding()} if la else None
            for r in tfds.as_numpy(tfds.load(name, split="train", data_dir=dirs[container], decoders=skip)):
                out.append(_pil_or_error(r["im"]) if la else r["im"])
            return out
        src = tfds.data_source(name, split="train", data_dir=dirs[container])
        n = len(src)
    except Exception as err:  # noqa: BLE001 (any refusal of the reference reader)
        return [*out, err]
    for i in range(n):
        try:
            out.append(np.asarray(src[i]["im"]))
        except Exception as err:  # noqa: BLE001 (any refusal of the reference reader)
            out.append(err)
    return out


def _damaged_tfds_case(case: tuple) -> None:
    schema, rows, container, kind, where, bad = case
    findings = Findings(schema, len(rows))
    with tempfile.TemporaryDirectory() as root:
        built = Built(None, build_tfds(root, schema, rows, file_formats=(container,)), root)
        dirs = built.tfds[1]
        (path,) = [os.path.join(d, f) for d, _, fs in os.walk(dirs[container]) for f in fs if f"-train.{container}-" in f]
        if kind.startswith("file"):
            _damage_file(path, kind, where)
        ref = _tfds_reader_rows(built, container, schema["im"].mode == "LA")
        refused = next((i for i, r in enumerate(ref) if isinstance(r, Exception)), None)
        if refused is None and len(ref) != len(rows):
            refused = len(ref)  # the reader stopped early without an error: fewer records than the metadata
        for streaming in (False, True):
            label = f"{kind} at {where:.3f} (row {bad}), {container} {'streaming' if streaming else 'eager'}"
            where_ = f"{label} (the TFDS reader {'reads it' if refused is None else f'refuses row {refused}'})"
            with findings.case():
                try:
                    got = read_split(built.load(container, streaming, Options()), len(rows), streaming)
                except (ValueError, RuntimeError) as err:
                    msg = str(err)
                    names_file = path in msg
                    names_row = "'im'" in msg and (refused is None or re.search(rf"\brow {refused}\b", msg))
                    if not (names_file or names_row):
                        raise AssertionError(f"{where_}: the error names neither the file nor the field and row: {msg}") from err
                    continue
                except Exception as err:  # any other error type is itself the finding
                    raise AssertionError(f"{where_}: {type(err).__name__} (not ValueError): {err}") from err
                if refused is not None:
                    raise AssertionError(f"{where_}: returned values where the TFDS reader raises ({ref[refused]!r})")
                # JPEG pixels are PIL's (rule 7), and so are grey+alpha PNGs (tf.image cannot decode them; the
                # data source's OpenCV gives 4 channels), as in tfds_reference.
                by_pil = schema["im"].fmt == "jpeg" or schema["im"].mode == "LA"
                want = [decode_image(r["im"].encoded) if by_pil else np.asarray(p).reshape(p.shape[0], p.shape[1], -1)
                        for r, p in zip(rows, ref)]
                if len({w.shape for w in want}) > 1:
                    raise AssertionError(f"{where_}: returned one array for images of shapes {[w.shape for w in want]}")
                compare(got, {("im",): np.stack(want)}, where_)
    findings.done()


def _explicit_damaged_tfds(container: str, kind: str, where: float) -> tuple:
    """Returns a case of 3 RGB PNGs (8 x 8) with the file or row 1's image damaged at ``where``."""
    spec = Img("RGB", ("RGB",), (8, 8))
    rows = [{"im": Picture(p, encode_image(p), "RGB")} for p in (_picture(spec, "RGB", s).pixels for s in range(3))]
    if kind.startswith("image"):
        rows[1] = {"im": Picture(rows[1]["im"].pixels, _damaged(rows[1]["im"].encoded, kind[6:], where), "RGB")}
    return {"im": spec}, rows, container, kind, where, 1


# Always run, whatever is drawn: a flip inside an array_record record's chunk (riegeli's hash
# names neither file nor record), a tfrecord frame's flip, an image's flipped IDAT bit, and a
# PNG missing its last byte (PIL and libspng read it; TensorFlow's libpng refuses it).
DAMAGED_TFDS_EXAMPLES = (_explicit_damaged_tfds("array_record", "file flip", 0.008),
                         _explicit_damaged_tfds("tfrecord", "file flip", 0.5),
                         _explicit_damaged_tfds("tfrecord", "image flip", 0.6),
                         _explicit_damaged_tfds("tfrecord", "image cut", 1.0))


@pytest.mark.fuzz
def test_damaged_tfds_files_give_the_tfds_readers_values_or_a_clear_error(request):
    """Bit flips and cuts of tfrecord and array_record files, and damaged PNG/JPEG images and bombs in them."""
    _run(request, damaged_tfds_splits(), _damaged_tfds_case, 4, DAMAGED_TFDS_EXAMPLES)


# ----------------------------------------------------------------------------- files rewritten mid-stream

REWRITE_SHARDS = 4


@pytest.fixture(scope="module")
def sharded_toy(tmp_path_factory) -> dict[str, str]:
    import tfds_fixtures as fx  # TFDS builders: only these tests need them

    root = tmp_path_factory.mktemp("toy_sharded")
    return {c: fx.prepare(fx.DfnToy, str(root / c), c, num_shards=REWRITE_SHARDS) for c in ("tfrecord", "array_record")}


def _rewrite_case(sharded: dict, case: tuple) -> None:
    """Streams two epochs of ``dfn_toy`` and rewrites one file after ``before`` batches: every batch
    served is the unchanged data's, and the stream raises naming the file before its end."""
    import tfds_fixtures as fx  # TFDS builders: only these tests need them

    container, shuffle, seed, shard, before, how, in_place = case
    where = f"{container} shuffle={shuffle} seed={seed}: file {shard} rewritten ({how}, {'in place' if in_place else 'replaced'}) after {before} batches"

    def stream(data_dir):
        return dfn.from_tfds("dfn_toy", "train", data_dir=data_dir, streaming=True, shuffle=shuffle, seed=seed,
                             max_length={"seq": 4, "text": 24}, chunk_size=5, shuffle_buffer_size=10, prefetch=1)

    state, want = stream(sharded[container]), []
    for _ in range(8):
        state, b = dfn.get_batch(state, 10)
        want.append(jax.tree.map(np.asarray, b))
    state.close()
    with tempfile.TemporaryDirectory() as root:
        data_dir = os.path.join(root, container)
        shutil.copytree(sharded[container], data_dir)
        (version,) = [d for d, _, fs in os.walk(data_dir) if any("-train." in f for f in fs)]
        path = os.path.join(version, f"dfn_toy-train.{container}-{shard:05d}-of-{REWRITE_SHARDS:05d}")
        state = stream(data_dir)
        try:
            for i in range(8):
                if i == before:
                    fx.rewrite_file(path, how, in_place)
                try:
                    state, b = dfn.get_batch(state, 10)
                except RuntimeError as err:
                    if f"{path}: the data file changed since the source was built" not in str(err):
                        raise AssertionError(f"{where}: batch {i} raised naming not the file: {err}") from err
                    return
                compare(_flat(jax.tree.map(np.asarray, b)), _flat(want[i]), f"{where}: batch {i}")
        finally:
            state.close()
    raise AssertionError(f"{where}: two epochs read after the rewrite without an error")


rewrites = st.tuples(st.sampled_from(["tfrecord", "array_record"]), st.booleans(), st.integers(0, 2**31 - 1),
                     st.integers(0, REWRITE_SHARDS - 1), st.integers(0, 3), st.sampled_from(["same size", "other size"]),
                     st.booleans())


@pytest.mark.fuzz
def test_files_rewritten_mid_stream_are_refused_naming_them(request, sharded_toy):
    """A tfrecord or array_record file rewritten while a stream reads: the old data's batches, then
    an error naming the file; never a batch of the new data."""
    _run(request, rewrites, lambda case: _rewrite_case(sharded_toy, case), 3)
