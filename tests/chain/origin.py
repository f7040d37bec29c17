"""The origin the chain tests reach: HTTPS on every address of the internet namespace, one
certificate for every *.origin.test name, and a record of every request it receives.

argv: cert file, key file, record file (JSON lines), pages directory.

Endpoints (any host):
  .../echo...         JSON of what arrived: method, path, headers, body
  .../sse?n=N&gap=S   text/event-stream, N events S seconds apart
  .../ws              WebSocket echo (text frames)
  .../big?mib=N       N MiB (or ?kib=N KiB) of application/octet-stream
  /page/<name>        the file <pages>/<name> (configurable responses; .json, .sse and .txt
                      get their content types, anything else text/html)
Anything else answers 200 "origin <host> <path>".
"""
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CERT, KEY, RECORD, PAGES = sys.argv[1:5]
LOCK = threading.Lock()


def record(entry):
    with LOCK, open(RECORD, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        url = urlsplit(self.path)
        record({
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host", ""),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body[:65536].decode(errors="replace"),
            "body_len": len(body),
        })
        q = parse_qs(url.query)
        if "/echo" in url.path:
            out = json.dumps({
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(errors="replace"),
            }).encode()
            return self.reply(200, "application/json", out)
        if url.path.endswith("/sse"):
            return self.sse(int(q.get("n", ["5"])[0]), float(q.get("gap", ["0.2"])[0]))
        if url.path.endswith("/ws"):
            return self.websocket()
        if url.path.endswith("/big"):
            return self.big(int(q.get("kib", [str(1024 * int(q.get("mib", ["20"])[0]))])[0]))
        if url.path.startswith("/page/"):
            name = os.path.basename(url.path)
            ctype = {".json": "application/json", ".sse": "text/event-stream",
                     ".txt": "text/plain; charset=utf-8"}.get(os.path.splitext(name)[1], "text/html; charset=utf-8")
            with open(os.path.join(PAGES, name), "rb") as f:
                return self.reply(200, ctype, f.read())
        return self.reply(200, "text/plain", f"origin {self.headers.get('Host', '')} {url.path}\n".encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def reply(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def sse(self, n, gap):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for i in range(n):
            self.wfile.write(f"id: {i}\nevent: token\ndata: {{\"i\": {i}, \"t\": {time.time():.3f}}}\n\n".encode())
            self.wfile.flush()
            if i + 1 < n:
                time.sleep(gap)
        self.close_connection = True

    def big(self, kib):
        chunk = bytes(range(256)) * 4  # 1 KiB
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(kib * len(chunk)))
        self.end_headers()
        for _ in range(kib // 1024):
            self.wfile.write(chunk * 1024)
        self.wfile.write(chunk * (kib % 1024))

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            return self.reply(426, "text/plain", b"websocket upgrade expected\n")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            frame = read_frame(self.rfile)
            if frame is None:
                break
            op, data = frame
            if op == 8:
                self.wfile.write(bytes([0x88, 0]))
                break
            if op in (1, 2):
                self.wfile.write(encode_frame(op, b"echo:" + data))
                self.wfile.flush()
        self.close_connection = True


def read_exact(f, n):
    b = f.read(n)
    return b if b and len(b) == n else None


def read_frame(f):
    h = read_exact(f, 2)
    if h is None:
        return None
    op, ln = h[0] & 0x0F, h[1] & 0x7F
    if ln == 126:
        ln = struct.unpack(">H", read_exact(f, 2))[0]
    elif ln == 127:
        ln = struct.unpack(">Q", read_exact(f, 8))[0]
    mask = read_exact(f, 4) if h[1] & 0x80 else b"\0\0\0\0"
    data = read_exact(f, ln) if ln else b""
    return op, bytes(c ^ mask[i % 4] for i, c in enumerate(data))


def encode_frame(op, data):
    if len(data) < 126:
        return bytes([0x80 | op, len(data)]) + data
    return bytes([0x80 | op, 126]) + struct.pack(">H", len(data)) + data


class Server(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET

    def handle_error(self, request, client_address):
        # A hop that cuts a response short (pipelock's size limit) is an outcome, not noise.
        pass

    def finish_request(self, request, client_address):
        try:
            tls = CTX.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self.RequestHandlerClass(tls, client_address, self)


CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
CTX.load_cert_chain(CERT, KEY)
srv = Server(("0.0.0.0", 443), Handler)
print("ready", flush=True)
srv.serve_forever()
