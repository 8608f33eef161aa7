"""ragline's bottom layer: records, Arrow schemas, hashing, atomic writes and the error root.

Everything else imports from here; nothing here imports another ragline layer.

- :mod:`ragline.core.errors`: :class:`RaglineError` and its named cases.
- :mod:`ragline.core.records`: :class:`Document`, :class:`ElementSpan`, :class:`Chunk`,
  :class:`QuarantineRecord`.
- :mod:`ragline.core.schemas`: the declared Arrow schemas of every table ragline writes.
- :mod:`ragline.core.hashing`: sha256 of files, bytes, text and JSON values; document ids.
- :mod:`ragline.core.io`: atomic file writes (temp file, fsync, ``os.replace``, fsync of the folder).
"""
