#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay in each direction.

netem is not available on these machines, so the benchmarks add latency here:
every piece of data read from one side is written to the other side DELAY
milliseconds after it arrived, in order. Throughput is not limited (shape it
with `tc qdisc ... tbf` on lo); only the time each byte takes to cross is.

    delay_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT [--delay-ms 10]

Prints "listening PORT" on stdout once it accepts connections (port 0 picks
a free one). Stops on SIGTERM or SIGINT. On SIGUSR1 (and at exit) it prints
"bytes down=N up=M connections=C requests=R": the bytes relayed from the
target to the clients (what the registry served), from the clients to the
target, the connections accepted and the HTTP/1.x requests seen (request lines
counted in the client's bytes) so far — counters since start, never reset, so a
caller takes differences.

With --events FILE it also writes one JSON line per event, for timelines
(Benchmarks/timeline.py): {"t": wall-clock seconds, "c": connection number,
"e": "open" | "req" | "down", ...}: "req" carries the request line and its Range
header as the client sent them, "down" the bytes handed to the client in one
write (at the moment they leave the proxy, i.e. after the delay).
"""
import argparse
import asyncio
import json
import re
import signal
import sys
import time


COUNTS = {"down": 0, "up": 0, "connections": 0, "requests": 0}
REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE) [^ \r\n]+ HTTP/1\.[01]\r$", re.M)
RANGE_HEADER = re.compile(rb"^range: *([^\r\n]*)\r$", re.M | re.I)
EVENTS = None


def event(conn, kind, **fields):
    if EVENTS is not None:
        EVENTS.write(json.dumps({"t": round(time.time(), 6), "c": conn, "e": kind, **fields}) + "\n")


def report():
    print("bytes down={down} up={up} connections={connections} requests={requests}".format(**COUNTS), flush=True)


async def pump(reader, writer, delay, direction, conn):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read_side():
        try:
            while True:
                data = await reader.read(256 * 1024)
                COUNTS[direction] += len(data)
                if direction == "up":
                    lines = REQUEST_LINE.findall(data)
                    COUNTS["requests"] += len(lines)
                    if EVENTS is not None:
                        ranges = RANGE_HEADER.findall(data)
                        for m in REQUEST_LINE.finditer(data):
                            event(conn, "req", line=m.group(0).decode(errors="replace").strip(),
                                  range=ranges[0].decode(errors="replace") if len(lines) == 1 and ranges else None)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay, b""))

    async def write_side():
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                if direction == "down":
                    event(conn, "down", n=len(data))
        except (ConnectionError, OSError):
            return

    await asyncio.gather(read_side(), write_side())


async def handle(client_reader, client_writer, host, port, delay):
    COUNTS["connections"] += 1
    conn = COUNTS["connections"]
    event(conn, "open")
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            pump(client_reader, upstream_writer, delay, "up", conn),
            pump(upstream_reader, client_writer, delay, "down", conn),
        )
    except asyncio.CancelledError:
        pass
    finally:
        for w in (client_writer, upstream_writer):
            try:
                w.close()
            except Exception:
                pass


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listen_port", type=int)
    parser.add_argument("target")
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--events", help="write a JSON line per connection, request and write here")
    args = parser.parse_args()
    global EVENTS
    if args.events:
        EVENTS = open(args.events, "a", buffering=1)
    host, _, port = args.target.rpartition(":")
    delay = args.delay_ms / 1000.0

    server = await asyncio.start_server(
        lambda r, w: handle(r, w, host or "127.0.0.1", int(port), delay),
        args.listen_host, args.listen_port)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, report)
    async with server:
        await stop.wait()
    report()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
