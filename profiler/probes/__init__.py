"""Loaders and decoders, one module per probe in ``bpf/``."""
