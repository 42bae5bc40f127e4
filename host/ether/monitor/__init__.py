"""The monitor: a Textual terminal UI that shows a running session and guards its data-saving guarantees.

``model`` follows the session on the bus (no Textual); ``commands`` sends control-plane messages;
``app`` composes the ``widgets`` and ``screens``, styled by ``monitor.tcss``; ``link`` is how the
monitor is tied to a session (``ether monitor`` attaches, ``ether run`` on a terminal owns it).
"""

from ether.monitor.link import attach, run_on_terminal

__all__ = ["attach", "run_on_terminal"]
