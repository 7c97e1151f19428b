"""The loader layer: one config vocabulary, two backend kinds, and the HF and TFDS adapters over them."""
