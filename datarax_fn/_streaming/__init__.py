"""The streaming state: a cursor over a host backend, its background reader and the bounded prefetch queue."""
