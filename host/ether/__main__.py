"""``python -m ether`` is the ``ether`` command."""

from ether.cli import main

main()
