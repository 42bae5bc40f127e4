"""The recorder: every data message of a session saved in one SQLite store, gaps recorded, never silent.

``store`` is the session store schema (one module, versioned, documented in docs/data.md); ``ledger``
tracks each source's sequence numbers and finds gaps; ``recorder`` is the recorder process;
``process`` starts and restarts it; ``recording`` is the session's side (run folder, manifest, drain).
"""
