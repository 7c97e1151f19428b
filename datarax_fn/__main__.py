"""The ``datarax-fn`` command (also ``python -m datarax_fn``): ``demo``, ``inspect``, ``bench``."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

import datarax_fn as dfn

from ._cli import bench
from ._cli.demo import run as run_demo


def _cmd_demo(args: argparse.Namespace) -> int:
    result = run_demo(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                 checkpoint_dir=args.checkpoint_dir, progress=not args.no_progress)
    return 0 if result["resume_ok"] else 1


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _summary(batch: Any) -> list[str]:
    lines = []
    for path, x in jax.tree_util.tree_flatten_with_path(batch)[0]:
        x = np.asarray(x)
        name = jax.tree_util.keystr(path) or "<root>"
        stats = ""
        if x.size and (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            stats = f" min {x.min()} max {x.max()} mean {x.astype(np.float64).mean():.4g}"
        lines.append(f"  {name}: {x.dtype}{list(x.shape)}{stats}")
    return lines


_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I", "F")


def _length(text: str) -> tuple[str | None, Any]:
    """Returns ``(field or None, length)`` of one ``--max-length`` value: ``N``, ``KEY=N`` or ``KEY=N1,N2``."""
    key, _, value = text.rpartition("=") if "=" in text else (None, "", text)
    try:
        lengths = tuple(int(x) for x in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N, KEY=N or KEY=N1,N2 (one per ragged level)") from None
    return key or None, lengths[0] if len(lengths) == 1 else lengths


def _mode(text: str) -> tuple[str | None, str]:
    """Returns ``(field or None, mode)`` of one ``--image-mode`` value: ``MODE`` or ``KEY=MODE``."""
    key, _, mode = text.rpartition("=") if "=" in text else (None, "", text)
    if mode not in _MODES:
        raise argparse.ArgumentTypeError(f"{text!r}: the mode must be one of {', '.join(_MODES)} (as MODE or KEY=MODE)")
    return key or None, mode


def _per_field(flag: str, values: list[tuple[str | None, Any]] | None) -> Any:
    """Returns one value for every field, a ``{field: value}`` dict, or None, from a repeatable flag."""
    if not values:
        return None
    if all(k is None for k, _ in values) and len(values) == 1:
        return values[0][1]
    if any(k is None for k, _ in values):
        raise ValueError(f"{flag}: give one value for every field, or KEY=VALUE once per field, not both; got "
                         f"{' '.join(f'{flag} ' + (str(v) if k is None else f'{k}={v}') for k, v in values)}.")
    return {k: v for k, v in values}


# The loaders' errors name their Python options; the command line names its flags instead.
_DICT_OPTION = re.compile(r"\b(max_length|image_mode)=\{([^{}]*)\}")
_PAIR = re.compile(r"'([^']*)':\s*(?:'([^']*)'|\(([^)]*)\)|([^,]+))")
_LIST_OPTION = re.compile(r"\b(include_keys|exclude_keys)=\[([^\]]*)\]")
_VALUE_OPTION = re.compile(r"\b(max_length|image_mode|split|data_dir)=(?:'([^']*)'|([\w;.%:-]+))")
_QUOTED = re.compile(r"'([^']*)'")
_FLAG_OPTION = re.compile(r"\b(truncate|streaming)=True\b")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def as_flags(message: str) -> str:
    """Returns a loader error message with its Python options written as this command's flags."""
    message = _DICT_OPTION.sub(lambda m: " ".join(
        f"{_flag(m[1])} {k}={a or t.replace(' ', '') or b.strip()}" for k, a, t, b in _PAIR.findall(m[2])), message)
    message = _LIST_OPTION.sub(lambda m: f"{_flag(m[1])} {','.join(_QUOTED.findall(m[2]))}", message)
    message = _VALUE_OPTION.sub(lambda m: f"{_flag(m[1])} {m[2] if m[2] is not None else m[3]}", message)
    return _FLAG_OPTION.sub(lambda m: _flag(m[1]), message)


def _open(args: argparse.Namespace) -> Any:
    kwargs: dict[str, Any] = {"split": args.split}
    if args.data_dir is not None:
        kwargs["data_dir"] = args.data_dir
    if args.max_length:
        kwargs["max_length"] = _per_field("--max-length", args.max_length)
    if args.truncate:
        kwargs["truncate"] = True
    if args.image_mode:
        kwargs["image_mode"] = _per_field("--image-mode", args.image_mode)
    if args.include_keys:
        kwargs["include_keys"] = tuple(args.include_keys.split(","))
    if args.exclude_keys:
        kwargs["exclude_keys"] = tuple(args.exclude_keys.split(","))
    if args.backend == "hf":
        if not hasattr(dfn, "from_hf"):
            raise SystemExit("inspect hf: this install has no HF backend (dfn.from_hf); install datarax_fn[hf].")
        return dfn.from_hf(args.name, streaming=True if args.streaming else None, **kwargs)
    if not hasattr(dfn, "from_tfds"):
        raise SystemExit("inspect tfds: this install has no TFDS backend (dfn.from_tfds); install datarax_fn[tfds].")
    return dfn.from_tfds(args.name, streaming=True if args.streaming else None, **kwargs)


def _cmd_inspect(args: argparse.Namespace) -> int:
    logger = logging.getLogger("datarax_fn")
    capture = _Capture()
    logger.addHandler(capture)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        t0 = time.perf_counter()
        state = _open(args)
        t_open = time.perf_counter() - t0
    except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
        # The backends' errors name the field and the fix; show them without a traceback.
        print(f"datarax-fn inspect {args.backend} {args.name}: {type(err).__name__}: {as_flags(str(err))}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
    kind = type(state).__name__
    print(f"{args.backend} {args.name} split={args.split}: {kind} (opened in {t_open:.2f}s)")
    for line in capture.lines:
        print(f"  mode: {line}")
    if not capture.lines:
        print(f"  mode: {'streaming' if 'Streaming' in kind else 'eager'} (requested)" if args.streaming
              else f"  mode: {'streaming' if 'Streaming' in kind else 'eager'}")
    n = dfn.num_records(state)
    print(f"len: {n if n is not None else 'unknown (stream)'}")
    print("element_spec:")
    for path, s in jax.tree_util.tree_flatten_with_path(dfn.element_spec(state))[0]:
        print(f"  {jax.tree_util.keystr(path) or '<root>'}: {s.dtype}{list(s.shape)}")
    size = args.batch_size if n is None else max(1, min(args.batch_size, n))
    state, batch = dfn.get_batch(state, size)
    jax.block_until_ready(batch)
    print(f"one batch of {size}:")
    for line in _summary(batch):
        print(line)
    t0, count = time.perf_counter(), 0
    while count < args.batches and time.perf_counter() - t0 < args.seconds:
        state, batch = dfn.get_batch(state, size)
        count += 1
    jax.block_until_ready(batch)
    dt = time.perf_counter() - t0
    print(f"throughput: {count / dt:,.1f} batches/s, {count * size / dt:,.0f} records/s "
          f"({count} batches of {size})")
    close = getattr(state, "close", None)
    if callable(close):
        close()
    return 0


def _benchmarks_dir() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (base / "benchmarks").is_dir():
            return base / "benchmarks"
    return None


def _cmd_bench(args: argparse.Namespace) -> int:
    folder = _benchmarks_dir()
    if folder is None:
        print("bench: no benchmarks/ folder here; run it from a checkout of the repository.", file=sys.stderr)
        return 2
    flags = [("--quick", args.quick), (f"--only {' '.join(args.only or ())}", args.only),
             (f"--out {args.out}", args.out != "bench-results"), (f"--page {args.page}", args.page),
             (f"--timeout {args.timeout}", args.timeout)]
    command = " ".join(["datarax-fn bench"] + [flag for flag, given in flags if given])
    return bench.run(folder, Path(args.out), quick=args.quick, only=args.only,
                      page=None if args.page is None else Path(args.page), timeout=args.timeout, command=command)


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the ``datarax-fn`` command."""
    parser = argparse.ArgumentParser(prog="datarax-fn", description="Pure-functional JAX data sources.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a digits classifier: pipeline, fori_loop, Orbax checkpoint, resume, eval")
    demo.add_argument("--epochs", type=int, default=60)
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--checkpoint-dir", default=None, help="default: a fresh temporary directory")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(func=_cmd_demo)

    inspect = sub.add_parser("inspect", help="open an HF or TFDS dataset and summarise it")
    inspect.add_argument("backend", choices=("hf", "tfds"))
    inspect.add_argument("name", help="HF dataset name or local path; TFDS builder name")
    inspect.add_argument("--split", required=True)
    inspect.add_argument("--data-dir", default=None)
    inspect.add_argument("--streaming", action="store_true", help="force streaming (default: eager if it fits memory)")
    inspect.add_argument("--max-length", type=_length, action="append", default=None, metavar="[KEY=]N",
                         help="pad ragged fields and text to N: one N for every field, or KEY=N (KEY=N1,N2 per "
                              "ragged level), repeated once per field")
    inspect.add_argument("--truncate", action="store_true", help="cut rows longer than --max-length")
    inspect.add_argument("--image-mode", type=_mode, action="append", default=None, metavar="[KEY=]MODE",
                         help=f"channels of images whose feature declares none (one of {', '.join(_MODES)}): one "
                              "MODE for every image field, or KEY=MODE repeated once per field")
    inspect.add_argument("--include-keys", default=None, help="comma-separated fields to keep")
    inspect.add_argument("--exclude-keys", default=None, help="comma-separated fields to drop")
    inspect.add_argument("--batch-size", type=int, default=32)
    inspect.add_argument("--batches", type=int, default=50, help="at most this many batches for the throughput")
    inspect.add_argument("--seconds", type=float, default=3.0, help="at most this long for the throughput")
    inspect.set_defaults(func=_cmd_inspect)

    bench = sub.add_parser("bench", help="run every script in benchmarks/; write the table and the plots")
    bench.add_argument("--only", nargs="*", default=None, help="run only scripts whose name contains one of these")
    bench.add_argument("--quick", action="store_true", help="a smoke run: each script with --quick")
    bench.add_argument("--out", default="bench-results", help="folder for results.json, results.md and the plots")
    bench.add_argument("--page", default=None, help="a Markdown page whose bench section gets the report "
                       "(e.g. docs/benchmarks.md; the plots go to img/ beside it)")
    bench.add_argument("--timeout", type=float, default=None, help="seconds per script")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the ``datarax-fn`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
