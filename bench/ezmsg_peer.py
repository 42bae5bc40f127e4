"""The ezmsg baseline of bench/arrays.py: one ezmsg client per process on one graph server, arrays
through shared memory (ezmsg's transport between processes of one host), at its best settings: plain
numpy arrays (ezmsg's cheapest message), a buffer per message big enough, 32 buffers, zero-copy receive.

  source  publishes one warm-up array, waits for a line on stdin, then publishes n arrays back to back
  sink    reports ``{"ready"}`` once subscribed, ``{"warm"}`` after the warm-up, ``{"last": t}`` after n

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


async def sink(address: tuple[str, int], n: int) -> None:
    async with ez.GraphContext(address, auto_start=False) as ctx:
        sub = await ctx.subscriber(TOPIC)
        report(ready=True)
        async with sub.recv_zero_copy():
            report(warm=True)
        for _ in range(n):
            async with sub.recv_zero_copy() as array:
                assert array.nbytes > 0
                del array  # a view of the shared memory: none may outlive its buffer
        report(last=time.time())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("source", "sink"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--kind", default="float64")
    args = parser.parse_args()
    address = (args.host, args.port)
    asyncio.run(source(address, args.n, args.kind) if args.role == "source" else sink(address, args.n))


if __name__ == "__main__":
    main()
