"""Network probes for the containment tests, run as a given UID inside the Pod namespace.

argv[1] is a JSON list of probes; prints one JSON object: probe name -> outcome, where the
outcome is "ok:<first bytes>", "refused", "timeout", "denied" (EPERM/EACCES) or "error:<errno>".
"""
import errno
import json
import socket
import sys
import time


def outcome(fn):
    start = time.monotonic()
    try:
        data = fn()
        result = "ok:" + data.decode(errors="replace").strip()[:40]
    except socket.timeout:
        result = "timeout"
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH):
            result = "refused"
        elif e.errno in (errno.EPERM, errno.EACCES):
            result = "denied"
        else:
            result = "error:" + errno.errorcode.get(e.errno, str(e.errno))
    return result, round(time.monotonic() - start, 3)


def tcp(host, port, send=""):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect((host, port))
    if send:
        s.sendall(send.encode())
    return s.recv(100)


def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect((host, port))
    s.send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")
    return s.recv(512)


def icmp(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.settimeout(3)
    s.connect((host, 0))
    s.send(b"\x08\x00\x00\x00\x00\x01\x00\x01ping")
    return s.recv(100)


def read(path):
    with open(path, "rb") as f:
        return f.read(40) or b"(empty)"


KINDS = {"tcp": tcp, "udp": udp, "icmp": icmp, "read": read}

results = {}
for p in json.loads(sys.argv[1]):
    name, kind, args = p[0], p[1], p[2:]
    results[name] = outcome(lambda: KINDS[kind](*args))
print(json.dumps(results))
