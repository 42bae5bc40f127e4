"""``ether sessions | logs | lineage | export | replay``: reading recorded sessions (the commands live in
``ether.data.recorded``, ``ether.data.recorded_logs`` and ``ether.data.replay``; they are imported only
when run)."""

from __future__ import annotations

import argparse

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DATA_HELP = "the data folder (default $ETHER_DATA or ./ether_data)"


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sessions", help="list recorded sessions: status, duration, messages, gaps")
    p.add_argument("--data", help=DATA_HELP)
    p.set_defaults(handler="ether.data.recorded:cmd_sessions")

    p = commands.add_parser(
        "logs", help="the log lines of every process of a session (instances, recorder, ...)"
    )
    p.add_argument("session", nargs="?", default="last", help="a run folder, run id, or 'last' (default)")
    p.add_argument("--instance", help="one process: an instance's name, recorder, broker, or a supervisor's")
    p.add_argument("--level", choices=LEVELS, type=str.upper, help="this level and above (default: all kept)")
    p.add_argument(
        "--since", help="lines from then on: 90s, 5m, 2h, 1d ago, or a time (18:40, 2026-12-03T18:40)"
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines while the session runs"
    )
    p.add_argument("--data", help=DATA_HELP)
    p.set_defaults(handler="ether.data.recorded_logs:cmd_logs")

    p = commands.add_parser("lineage", help="trace a message back to the raw samples that produced it")
    p.add_argument("message", help="a message id (_ether.id)")
    p.add_argument("--session", help="the run to look in (default: search all, newest first)")
    p.add_argument("--data", help=DATA_HELP)
    p.set_defaults(handler="ether.data.recorded:cmd_lineage")

    p = commands.add_parser(
        "export",
        help="export a recorded session: a file per topic (csv, parquet), or one HDF5/NWB/Zarr/MCAP file",
    )
    p.add_argument("session", help="a run folder, run id, or 'last'")
    p.add_argument("--format", choices=("csv", "parquet", "hdf5", "nwb", "zarr", "mcap"), default="csv")
    p.add_argument("--out", help="output folder (default <run id>-<format>)")
    p.add_argument("--data", help=DATA_HELP)
    p.set_defaults(handler="ether.data.recorded:cmd_export")

    p = commands.add_parser("replay", help="feed a recorded session's sources through a pipeline and compare")
    p.add_argument("session", help="a run folder, run id, or 'last'")
    p.add_argument("--config", required=True, help="the (changed) session file to run")
    p.add_argument("--data", help=DATA_HELP)
    p.set_defaults(handler="ether.data.replay:cmd_replay")
