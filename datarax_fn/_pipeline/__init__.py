"""Pipelines: a state plus stages and a batch size, the stages themselves, statistics, and moving batches to devices."""
