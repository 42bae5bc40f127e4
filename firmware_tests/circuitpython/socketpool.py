"""CircuitPython's socketpool, as far as adafruit_minimqtt uses it, over
MicroPython's socket module (the real one exists only on Wi-Fi boards).

As on CircuitPython, addresses are (host, port) tuples, and a read that
times out raises OSError.
"""

import socket


class Socket:
    def __init__(self, sock):
        self._sock = sock
        self.settimeout = sock.settimeout
        self.send = sock.send
        self.setsockopt = sock.setsockopt
        self.close = sock.close

    def connect(self, address):
        host, port = address
        self._sock.connect(socket.getaddrinfo(host, port)[0][-1])

    def recv_into(self, buf, nbytes=0):
        data = self._sock.recv(nbytes or len(buf))
        buf[: len(data)] = data
        return len(data)


class SocketPool:
    AF_INET = socket.AF_INET
    SOCK_STREAM = socket.SOCK_STREAM
    IPPROTO_TCP = 6
    TCP_NODELAY = 1

    def __init__(self, radio):
        pass

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        found = socket.getaddrinfo(host, port, family, type)
        return [(f, t, p, "", (host, port)) for f, t, p, _, _ in found]

    def socket(self, family=AF_INET, type=SOCK_STREAM, proto=0):
        return Socket(socket.socket(family, type))
