"""The eager state: the whole split as device arrays, its placements, and its global batches across processes."""
