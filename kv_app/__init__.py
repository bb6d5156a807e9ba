"""kv_app: a read-only key-value server for a batch-computed lookup table."""

__version__ = "1.1.0"
