"""Keeping every sample: the publisher's ``outbox``, the ``recorder`` process and its store, the run's
``provenance``, and reading a recorded session back (``recorded``: open_session, lineage, export;
``replay``)."""
