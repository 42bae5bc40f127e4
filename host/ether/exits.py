"""Exit codes of every Ether process and command, in one place (docs/operations.md lists them)."""

OK = 0
FAILED = 1  # a session could not start or stop cleanly; the recorder could not save
CONFIG = 2  # bad config, arguments or listen address (argparse's own usage errors are 2 too)
INIT_FAILED = 3  # an instance's class could not be imported or constructed
NO_BROKER = 4  # a child process could not reach the session's broker
UNRESPONSIVE = 5  # an instance's lifecycle step did not finish in time
INCOMPLETE = 6  # `ether run`: the session was sealed incomplete (unsaved, missing or unprocessed data)
CRASHED = 7  # `ether run`: the session crashed while stopping (sealed crashed)
