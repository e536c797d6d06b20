"""Migration scripts, one revision per file (``NNNN_slug.py``, revision id ``NNNN``)."""
