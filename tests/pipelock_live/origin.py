"""A real HTTPS origin for the live-change test, run inside the test's network namespace.

argv: address, port, cert file, key file, request log file.
Endpoints: /hello answers with the Host it was asked for; /sse streams server-sent events
(one every 100 ms, at most 1200, so a forgotten stream ends by itself). Every request is
appended to the log as one JSON line (host, path) before it is answered, so a test can
prove what reached the origin and what never did. Prints "ready" once it listens.
"""
import http.server
import json
import socketserver
import ssl
import sys
import threading
import time

ADDR, PORT, CERT, KEY, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
log_lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        host = self.headers.get("Host", "")
        with log_lock, open(LOG, "a") as f:
            f.write(json.dumps({"host": host, "path": self.path}) + "\n")
        if self.path.startswith("/sse"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for i in range(1200):
                    self.wfile.write(b"data: tick %d\n\n" % i)
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            self.close_connection = True
            return
        body = ("hello from %s\n" % host).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
srv = Server((ADDR, PORT), Handler)
# Handshakes happen in the handler threads, so one slow client cannot stall accept().
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
print("ready", flush=True)
srv.serve_forever()
