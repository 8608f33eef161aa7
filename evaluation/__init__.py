"""Evaluation: span algebra, document matching and retrieval/answer metrics shared by
``ragline eval chunking``, the promotion gate and ``ragline flow eval``."""
