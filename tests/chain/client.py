"""The agent's client in the chain tests, run as the agent UID inside the Pod namespace.

stdin: JSON list of requests; prints a JSON list of results, one per request.
A request: {"url": "https://host/path", "via": "egress" | "cred" (then the url is cred-proxy's own, http://127.0.0.1:9099/<name>/...), "method", "headers": {},
"body": str, "mode": "http" | "sse" | "ws" | "download", "ca": file, "repeat": N,
"proxy": "127.0.0.1:9090", "ws_message": str, "timeout": seconds (20)}.
"via": "egress" opens a CONNECT tunnel through the egress proxy and speaks TLS inside it
(verified against "ca", SNI = host); "cred" speaks plain HTTP to cred-proxy.
"repeat" sends the same request N times on one keep-alive connection (a package manager's
pattern) and reports every status. A result: status (the CONNECT answer when the tunnel was
refused), headers, body (first 64 KiB), issuer of the certificate the client saw, SSE events
with arrival times, download size and sha256, the WebSocket echo, or an error.
"""
import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import struct
import sys
import time
from urllib.parse import urlsplit

TIMEOUT = 20


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = sock.recv(1)
        if not c:
            break
        buf += c
    lines = buf.decode(errors="replace").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


def issuer_of(tls):
    cert = tls.getpeercert() or {}
    names = [v for rdn in cert.get("issuer", ()) for (k, v) in rdn if k in ("commonName", "organizationName")]
    return " / ".join(names)


def connect(req, result):
    u = urlsplit(req["url"])
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    if req.get("via", "egress") == "cred":
        return socket.create_connection((host, port), timeout=req.get("timeout", TIMEOUT))
    ph, pp = req.get("proxy", "127.0.0.1:9090").rsplit(":", 1)
    sock = socket.create_connection((ph, int(pp)), timeout=req.get("timeout", TIMEOUT))
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    status, headers = read_head(sock)
    if status != 200:
        result.update(status=status, headers=headers, stage="connect")
        try:
            result["body"] = sock.recv(4096).decode(errors="replace")
        except OSError:
            pass
        sock.close()
        return None
    ctx = ssl.create_default_context(cafile=req["ca"])
    tls = ctx.wrap_socket(sock, server_hostname=host)
    result["issuer"] = issuer_of(tls)
    return tls


def request_bytes(req, extra=None):
    u = urlsplit(req["url"])
    path = (u.path or "/") + (("?" + u.query) if u.query else "")
    body = req.get("body", "").encode()
    headers = {"Host": u.netloc, "User-Agent": "bottle-agent/1", "Accept": "*/*"}
    headers.update(req.get("headers", {}))
    headers.update(extra or {})
    if body or req.get("method", "GET") in ("POST", "PUT", "PATCH"):
        headers["Content-Length"] = str(len(body))
    head = f"{req.get('method', 'GET')} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def ws_frame(data):
    mask = os.urandom(4)
    payload = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    ln = len(data)
    head = bytes([0x81, 0x80 | ln]) if ln < 126 else bytes([0x81, 0x80 | 126]) + struct.pack(">H", ln)
    return head + mask + payload


def one(req):
    result = {"name": req.get("name", req["url"])}
    start = time.monotonic()
    try:
        conn = connect(req, result)
        if conn is None:
            return result
        mode = req.get("mode", "http")
        if mode == "ws":
            key = base64.b64encode(os.urandom(16)).decode()
            conn.sendall(request_bytes(req, {
                "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}))
            status, headers = read_head(conn)
            result.update(status=status, headers=headers)
            if status == 101:
                conn.sendall(ws_frame(req.get("ws_message", "hello").encode()))
                h = conn.recv(2)
                ln = h[1] & 0x7F
                if ln == 126:
                    ln = struct.unpack(">H", conn.recv(2))[0]
                data = b""
                while len(data) < ln:
                    data += conn.recv(ln - len(data))
                result["ws_echo"] = data.decode(errors="replace")
            else:
                result["body"] = conn.recv(4096).decode(errors="replace")
            return result
        statuses = []
        for _ in range(req.get("repeat", 1)):
            conn.sendall(request_bytes(req))
            resp = http.client.HTTPResponse(conn, method=req.get("method", "GET"))
            resp.begin()
            result["status"] = resp.status
            statuses.append(resp.status)
            result["headers"] = {k.lower(): v for k, v in resp.getheaders()}
            if mode == "sse":
                events, cur = [], []
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    line = line.decode(errors="replace").rstrip("\r\n")
                    if line == "":
                        if cur:
                            events.append({"t": round(time.monotonic() - start, 3), "lines": cur})
                        cur = []
                    else:
                        cur.append(line)
                result["events"] = events
            elif mode == "download":
                h, n = hashlib.sha256(), 0
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                result["bytes"] = n
                result["sha256"] = h.hexdigest()
            else:
                result["body"] = resp.read()[:65536].decode(errors="replace")
            if resp.will_close:
                break
        if len(statuses) > 1:
            result["statuses"] = statuses
    except Exception as e:  # the outcome is the data: report it
        result["error"] = f"{type(e).__name__}: {e}"
    result["secs"] = round(time.monotonic() - start, 3)
    return result


print(json.dumps([one(r) for r in json.load(sys.stdin)]))
