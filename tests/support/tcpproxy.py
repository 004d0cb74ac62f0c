"""A TCP proxy that can hold a client's connections silent, then cut them.

It puts a network partition between one client and a server that stays up: ``hold()`` stops
forwarding in both directions while every connection stays open (the client notices nothing
and new connections wait), ``release()`` closes them all, and the client's next connections go
through again. TLS passes through untouched.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


@dataclass
class TcpProxy:
    upstream: tuple[str, int]
    _listener: socket.socket = field(init=False)
    _flowing: threading.Event = field(default_factory=threading.Event, init=False)
    _open: set[socket.socket] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._flowing.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        """Cut every connection made so far, then forward again."""
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            _close(sock)
        self._flowing.set()

    def close(self) -> None:
        self._flowing.set()
        _close(self._listener)
        self.release()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        with self._lock:
            self._open.add(client)
        self._flowing.wait()  # a held proxy accepts and then waits, like a silent network
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        with self._lock:
            if client not in self._open:  # cut while connecting
                _close(server)
                return
            self._open.add(server)
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                self._flowing.wait()  # held: the bytes wait here, and are dropped if cut meanwhile
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        _close(sink)
        _close(source)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
