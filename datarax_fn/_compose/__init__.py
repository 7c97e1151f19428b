"""Composing sources: mixtures of several sources and packing of variable-length sequences."""
