"""Load generator for the cluster benchmarks, run in its own process: ``python -m bench._cluster_load``.

Reads one job (JSON) on stdin, writes the results (JSON) on stdout. A minimal HTTP/1.1 client
on asyncio streams over TLS with keep-alive connections, opened (and each used once for
/healthz) before measuring, so the figures are admission time, not TLS handshakes:

* ``burst``: one request per connection, all sent at once (``bodies[i]`` on connection i);
* ``closed``: ``connections`` workers each sending the next body as soon as the last answer
  arrived, until ``count`` requests or ``duration`` seconds, whichever comes first.

Latency is from the first byte written to the last byte of the answer read.
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import ssl
import sys
import time


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def summarize(status: int, content: bytes) -> dict:
    """allowed, the Secret names the patch adds, and the warning count of one answer."""
    if status != 200:
        return {"status": status, "allowed": False, "secrets": [], "warnings": 0}
    response = json.loads(content)["response"]
    names: list[str] = []
    for op in json.loads(base64.b64decode(response["patch"])) if response.get("patch") else []:
        value = op["value"]
        names += [item["name"] for item in value] if isinstance(value, list) else [value["name"]]
    return {"status": status, "allowed": response.get("allowed") is True, "secrets": names,
            "warnings": len(response.get("warnings") or [])}


async def connect(job: dict, n: int) -> list[Connection]:
    context = ssl.create_default_context(cafile=job["ca"])
    # Opened in waves: a thousand simultaneous handshakes would overflow the accept backlog.
    connections: list[Connection] = []
    for start in range(0, n, 100):
        connections += await asyncio.gather(*(Connection.open(job["port"], context)
                                              for _ in range(start, min(n, start + 100))))
    await asyncio.gather(*(c.request("GET", "/healthz") for c in connections))
    return connections


async def burst(job: dict) -> dict:
    bodies = [body.encode() for body in job["bodies"]]
    connections = await connect(job, len(bodies))

    async def one(connection: Connection, body: bytes) -> tuple[float, int, bytes]:
        started = time.perf_counter()
        status, content = await connection.request("POST", "/mutate", body)
        return time.perf_counter() - started, status, content

    began, began_unix = time.perf_counter(), time.time()
    results = await asyncio.wait_for(asyncio.gather(*(one(c, b) for c, b in zip(connections, bodies, strict=True))),
                                     job.get("timeout", 60))
    wall = time.perf_counter() - began
    for connection in connections:
        connection.close()
    # Read after the burst: decoding answers while others are still arriving would delay them.
    return {"wall_s": wall, "began_unix": began_unix, "latencies": [r[0] for r in results],
            "answers": [summarize(status, content) for _, status, content in results]}


async def closed(job: dict) -> dict:
    bodies = [body.encode() for body in job["bodies"]]
    connections = await connect(job, job["connections"])
    latencies: list[float] = []
    starts: list[float] = []  # wall-clock, so the caller can tell which window a request fell in
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + job["duration"]
    issued = 0

    async def worker(connection: Connection) -> None:
        nonlocal issued
        while issued < job["count"] and time.perf_counter() < deadline:
            body = bodies[issued % len(bodies)]
            issued += 1
            wall, started = time.time(), time.perf_counter()
            status, _ = await connection.request("POST", "/mutate", body)
            latencies.append(time.perf_counter() - started)
            starts.append(wall)
            statuses[status] = statuses.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    wall = time.perf_counter() - began
    for connection in connections:
        connection.close()
    return {"wall_s": wall, "latencies": latencies, "starts": starts, "statuses": statuses}


def main() -> None:
    job = json.load(sys.stdin)
    result = asyncio.run(burst(job) if job["mode"] == "burst" else closed(job))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime  # the TLS handshakes included
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
