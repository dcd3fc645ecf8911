"""Run inside a sandbox: attempts to get around its network policy, and a search for a
value. Each prints one word so the test can assert on it."""

import os
import socket
import struct
import sys


def dns_query(name):
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def dns(server, name, tcp):
    q = dns_query(name)
    try:
        if tcp:
            s = socket.create_connection((server, 53), timeout=3)
            s.sendall(struct.pack(">H", len(q)) + q)
            data = s.recv(4096)[2:]
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.sendto(q, (server, 53))
            data, _ = s.recvfrom(4096)
        answers = struct.unpack(">H", data[6:8])[0]
        print("answer" if answers else "empty")
    except OSError as e:
        print("blocked", type(e).__name__)


def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(b"ping", (host, int(port)))
        data, _ = s.recvfrom(100)
        print("reply" if data == b"ping" else "other")
    except OSError as e:
        print("blocked", type(e).__name__)


def tcp(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        data = s.recv(100)
        print("banner" if data.startswith(b"SSH-") else "connected")
    except OSError as e:
        print("blocked", type(e).__name__)


def raw():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        print("raw-allowed")
    except PermissionError:
        print("denied")


def memory(value_b64):
    """Counts the processes whose readable memory holds the value (given in base64, so that
    the command line that carries it, in the agent's memory, does not hold it)."""
    import base64

    needle = base64.b64decode(value_b64)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            maps = open(f"/proc/{pid}/maps").read().splitlines()
            mem = open(f"/proc/{pid}/mem", "rb", 0)
        except OSError:
            continue
        for line in maps:
            addr, perms = line.split()[:2]
            if "r" not in perms:
                continue
            start, end = (int(x, 16) for x in addr.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    found.append(pid)
                    break
            except (OSError, ValueError, OverflowError):
                continue
    print("found" if found else "clean", len(found))


if __name__ == "__main__":
    {"dns": lambda a: dns(a[0], a[1], a[2] == "tcp"), "udp": lambda a: udp(*a), "tcp": lambda a: tcp(*a),
     "raw": lambda a: raw(), "memory": lambda a: memory(a[0])}[sys.argv[1]](sys.argv[2:])
