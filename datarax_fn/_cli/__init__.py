"""The ``datarax-fn`` command's parts that are not public API: the demo and the benchmark runner."""
