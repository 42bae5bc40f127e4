"""Bench only: Ether with its sources' signatures switched off, to measure what identity costs.

``bench/pipeline.py`` puts this folder first on the PYTHONPATH of the sessions it runs as an
``-unsigned`` client; Python imports this module at start-up in every process of such a session, so
no message is signed (``sign`` and ``seal`` return the body) and every claimed source is believed. Never for
real use: without signatures the recorder cannot tell a forged ``src`` (docs/operations.md).
"""

from ether.transport import signing

signing.sign = lambda body, key: body
signing.seal = lambda text, data, key: text
signing.signed_by = lambda raw, key: True
