"""A loopback listener standing in for a sidecar port (run as that sidecar's UID).
argv: address family (4 or 6), port, reply."""
import socket
import sys

fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
addr = "::1" if sys.argv[1] == "6" else "127.0.0.1"
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[3].encode() + b"\n")
    c.close()
