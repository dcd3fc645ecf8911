import os
import socket
import time
import urllib.error
import urllib.request

import pytest


def _proxy():
    host, port = os.environ["E2B_API_URL"].removeprefix("http://").split(":")
    return host, int(port)


def _get(host_header, path="/"):
    req = urllib.request.Request(os.environ["E2B_API_URL"] + path, headers={"Host": host_header})
    return urllib.request.urlopen(req, timeout=10)


def test_get_host_reaches_a_web_server_in_the_sandbox(sbx):
    sbx.commands.run("mkdir -p /tmp/www && echo served-from-sandbox > /tmp/www/index.html")
    sbx.commands.run("cd /tmp/www && python3 -m http.server 8080", background=True)
    host = sbx.get_host(8080)
    assert host.startswith(f"8080-{sbx.sandbox_id}.")
    body = None
    for _ in range(100):
        try:
            with _get(host, "/index.html") as r:
                body = r.read()
            break
        except urllib.error.HTTPError as e:
            assert e.code == 502, e
            time.sleep(0.1)
    assert body == b"served-from-sandbox\n"


def test_closed_port_answers_like_e2b(sbx):
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(sbx.get_host(9))
    assert e.value.code == 502
    assert b"port is not open" in e.value.read()


def test_upgrades_are_bridged(sbx):
    # A server in the sandbox that accepts an HTTP upgrade and then echoes upper-cased bytes,
    # as a WebSocket server would switch protocols.
    server = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8765)); s.listen(1)
c, _ = s.accept(); data = b""
while b"\\r\\n\\r\\n" not in data:
    data += c.recv(1024)
c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nConnection: upgrade\\r\\nUpgrade: echo\\r\\n\\r\\n")
while True:
    d = c.recv(1024)
    if not d:
        break
    c.sendall(d.upper())
"""
    sbx.files.write("/tmp/echo.py", server)
    sbx.commands.run("python3 /tmp/echo.py", background=True)
    host = sbx.get_host(8765)
    for _ in range(100):
        conn = socket.create_connection(_proxy(), timeout=10)
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(1024)
            if not chunk:
                break
            head += chunk
        if head.startswith(b"HTTP/1.1 101"):
            break
        conn.close()
        time.sleep(0.1)
    assert head.startswith(b"HTTP/1.1 101"), head
    conn.sendall(b"hello through the tunnel")
    got = b""
    while len(got) < len(b"hello through the tunnel"):
        got += conn.recv(1024)
    assert got == b"HELLO THROUGH THE TUNNEL"
    conn.close()
