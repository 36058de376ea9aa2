#!/usr/bin/env python3
"""A TCP proxy that adds a fixed delay each way, listening on many loopback
addresses at once, for `verify` at fleet scale (scripts/bench-verify).

Every address 127.0.0.2, 127.0.0.3, ... (COUNT of them, all on loopback:
Linux routes 127.0.0.0/8 to `lo`) listens on PORT and forwards to one
upstream on 127.0.0.1, so one sshd fixture plays COUNT instances, each
DELAY ms away in each direction. Bytes keep their order; each chunk is held
DELAY ms after it was read, so the delay adds to the path, not to the
bandwidth. Loopback only; standard library only.

    latency_proxy.py --upstream-port 2222 --port 2200 --count 1000 \
        --delay-ms 50 --ready-file /tmp/x/ready

The ready file appears (atomically) once every address listens. SIGTERM
or SIGINT stops it.
"""

import argparse
import asyncio
import ipaddress
import os
import resource
import signal
import sys

BUFFER = 64 * 1024


def addresses(count):
    first = int(ipaddress.IPv4Address("127.0.0.2"))
    last = int(ipaddress.IPv4Address("127.255.255.254"))
    if first + count - 1 > last:
        sys.exit(f"--count {count} does not fit in 127.0.0.0/8")
    return [str(ipaddress.IPv4Address(first + i)) for i in range(count)]


async def pump(reader, writer, delay):
    """Copies reader to writer, each chunk delay seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        try:
            while True:
                data = await reader.read(BUFFER)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay, b""))

    async def write():
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
        except (ConnectionError, OSError):
            return

    await asyncio.gather(read(), write())


async def handle(client_reader, client_writer, upstream_port, delay):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            pump(client_reader, up_writer, delay),
            pump(up_reader, client_writer, delay),
        )
    finally:
        for w in (client_writer, up_writer):
            try:
                w.close()
            except OSError:
                pass


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    delay = args.delay_ms / 1000.0
    # One listener per address plus two sockets per connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    servers = []
    for address in addresses(args.count):
        server = await asyncio.start_server(
            lambda r, w: handle(r, w, args.upstream_port, delay),
            host=address,
            port=args.port,
            reuse_address=True,
            backlog=256,
        )
        servers.append(server)

    temp = args.ready_file + ".tmp"
    with open(temp, "w") as f:
        f.write(f"{args.count} {args.port}\n")
    os.rename(temp, args.ready_file)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
