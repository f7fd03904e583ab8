"""Slowloris probe: how long a running ncf_serving endpoint keeps idle and trickling connections open.

Opens ``--connections`` sockets in three equal groups and keeps them busy the way a slowloris
client does: ``idle`` connects and sends nothing, ``head`` trickles a request head one byte per
``--byte-every`` seconds, ``body`` sends a complete head and then trickles its body. Reports,
per group, how many the server closed within ``--seconds`` and after how long. The server closes
them after ``NCF_REQUEST_READ_SECONDS`` (default 20). Usage::

    NCF_REQUEST_READ_SECONDS=1 python -m ncf_serving serve --model-dir BUNDLE --port 8080 &
    python benchmarks/slow_clients.py 127.0.0.1:8080 --connections 300 --seconds 10
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time

HEAD = b"POST /invocations HTTP/1.1\r\nHost: probe\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
KINDS = ("idle", "head", "body")


def slow_connections(
    host: str, port: int, count: int, seconds: float, byte_every: float = 0.25
) -> dict[str, list[float | None]]:
    """Per group, when the server closed each connection (seconds after the first connect; None: still open)."""
    body = b"\r\n" + b"1" * 100  # the blank line ending the head, then the declared 100 bytes
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, tuple[str, bytes]] = {}
    closed: dict[socket.socket, float | None] = {}
    start = time.monotonic()
    for i in range(count):
        sock = socket.create_connection((host, port))
        kind = KINDS[i % len(KINDS)]
        if kind == "body":
            sock.sendall(HEAD)
        sock.setblocking(False)
        pending[sock] = (kind, {"idle": b"", "head": HEAD, "body": body}[kind])
        closed[sock] = None
        selector.register(sock, selectors.EVENT_READ)
    trickled = 0.0
    while time.monotonic() - start < seconds and any(value is None for value in closed.values()):
        if time.monotonic() - trickled > byte_every:
            trickled = time.monotonic()
            for sock, (kind, rest) in pending.items():
                if closed[sock] is None and rest:
                    try:
                        sock.send(rest[:1])
                    except OSError:
                        continue
                    pending[sock] = (kind, rest[1:])
        for key, _ in selector.select(timeout=0.05):
            try:
                ended = key.fileobj.recv(4096) == b""
            except ConnectionError:
                ended = True
            if ended:
                closed[key.fileobj] = time.monotonic() - start
                selector.unregister(key.fileobj)
    result: dict[str, list[float | None]] = {kind: [] for kind in KINDS}
    for sock, (kind, _) in pending.items():
        result[kind].append(closed[sock])
        sock.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT of the server")
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to keep trying")
    parser.add_argument("--byte-every", type=float, default=0.25, help="seconds between trickled bytes")
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    for kind, times in slow_connections(host, int(port), args.connections, args.seconds, args.byte_every).items():
        done = [t for t in times if t is not None]
        span = f", after {min(done):.2f}-{max(done):.2f} s" if done else ""
        print(f"{kind}: {len(done)}/{len(times)} closed by the server within {args.seconds:g} s{span}")


if __name__ == "__main__":
    main()
