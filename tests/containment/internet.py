"""Plays the internet inside its own network namespace: TCP services on every address it
holds (the web host, the metadata address, the outside resolver), a UDP resolver, and an
HTTPS origin for origin.test. argv: cert file, key file."""
import socket
import ssl
import sys
import threading


def serve_tcp(fam, addr, port, reply, tls=None):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        try:
            if tls:
                c = tls.wrap_socket(c, server_side=True)
                c.recv(4096)
                body = reply
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            else:
                c.sendall(reply)
        except Exception:
            pass
        finally:
            c.close()


def serve_udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(512)
        s.sendto(data[:2] + b"\x81\x80" + data[4:], peer)


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
threads = [
    (socket.AF_INET, "192.0.2.2", 443, b"internet\n", ctx),
    (socket.AF_INET, "192.0.2.2", 80, b"internet-80\n", None),
    (socket.AF_INET6, "2001:db8::2", 443, b"internet6\n", None),
    (socket.AF_INET, "169.254.169.254", 80, b"metadata\n", None),
    (socket.AF_INET, "198.51.100.53", 53, b"dns-tcp\n", None),
]
for t in threads:
    threading.Thread(target=serve_tcp, args=t, daemon=True).start()
threading.Thread(target=serve_udp, args=("198.51.100.53", 53), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
