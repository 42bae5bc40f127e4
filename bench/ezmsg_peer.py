"""The ezmsg baseline of bench/arrays.py: one ezmsg client per process on one graph server, arrays
through shared memory (ezmsg's transport between processes of one host), at its best settings: plain
numpy arrays (ezmsg's cheapest message), a buffer per message big enough, 32 buffers, zero-copy receive.

  source  publishes one warm-up array, waits for a line on stdin, then publishes n arrays back to back
  sink    reports ``{"ready"}`` once subscribed, ``{"warm"}`` after the warm-up, ``{"last": t}`` after n
  logger  a sink that also writes every array to ``--file``, as ezmsg's recorder would: ``--log json``
          is ezmsg's own MessageLogger line (``log_object``: JSON, the array base64-encoded, flushed per
          message, what ``ezmsg.util.messagelogger`` writes with write_period 0); ``--log raw`` appends
          the array's bytes (flushed per message), the cheapest a logger can do

The parent drives it like bench/raw_paho.py (JSON lines on stdout, commands on stdin).
Run: ``python bench/ezmsg_peer.py ROLE --host H --port P -n N --kind float64|frame``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ezmsg.core as ez  # noqa: E402
from bench_classes import array_of  # noqa: E402

TOPIC = "/BENCH/ARRAYS"


def report(**fields) -> None:
    print(json.dumps(fields), flush=True)


async def source(address: tuple[str, int], n: int, kind: str) -> None:
    array = array_of(kind)
    async with ez.GraphContext(address, auto_start=False) as ctx:
        pub = await ctx.publisher(TOPIC, host=address[0], buf_size=array.nbytes + 65536, num_buffers=32)
        await pub.broadcast(array)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for _ in range(n):
            await pub.broadcast(array)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until the parent is done


async def sink(address: tuple[str, int], n: int, file: str | None = None, log: str = "raw") -> None:
    from ezmsg.util.messagelogger import log_object

    out = open(file, "w" if log == "json" else "wb") if file else None  # closed below
    async with ez.GraphContext(address, auto_start=False) as ctx:
        sub = await ctx.subscriber(TOPIC)
        report(ready=True)
        async with sub.recv_zero_copy():
            report(warm=True)
        for _ in range(n):
            async with sub.recv_zero_copy() as array:
                assert array.nbytes > 0
                if out is not None:
                    out.write(f"{log_object(array)}\n" if log == "json" else array.data)
                    out.flush()
                del array  # a view of the shared memory: none may outlive its buffer
        report(last=time.time())
    if out is not None:
        out.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("source", "sink", "logger"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--kind", default="float64")
    parser.add_argument("--file", help="the logger's file")
    parser.add_argument("--log", choices=("json", "raw"), default="raw")
    args = parser.parse_args()
    address = (args.host, args.port)
    if args.role == "source":
        asyncio.run(source(address, args.n, args.kind))
    else:
        asyncio.run(sink(address, args.n, args.file if args.role == "logger" else None, args.log))


if __name__ == "__main__":
    main()
