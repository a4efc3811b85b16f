#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small NFSv3 + MOUNT server (ONC RPC over TCP) with one file, for the
nfs driver's tests of what ganesha will not do on demand:

- a server cache that a crash really loses: UNSTABLE writes go to memory
  only, COMMIT (or FILE_SYNC) writes them to FILE; SIGUSR1 is a crash and
  restart (the cache is dropped, the write verifier changes) and then
  touches DIR/crashed.N;
- NFS3ERR_JUKEBOX for the first N READ, WRITE and COMMIT calls (--jukebox);
- short WRITEs and READs: at most half of what was asked (--short).

    nfs_fake_server.py --dir DIR --file FILE --size BYTES [--jukebox N] [--short]

Serves FILE as /export/img on 127.0.0.1 at a free port (MOUNT and NFS on
the same port), written to DIR/port once listening (its pid in DIR/pid). Counters (calls per
procedure, JUKEBOX replies, short replies) go to DIR/stats.json on SIGUSR2
or SIGTERM, and the server exits.
"""
import argparse
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading

MOUNT_PROG, NFS_PROG = 100005, 100003
ROOT_FH, FILE_FH = b"fake-root", b"fake-file"
NF3REG, NF3DIR = 1, 2
UNSTABLE, FILE_SYNC = 0, 2
JUKEBOX, NOENT, STALE = 10008, 2, 70
MAX_IO = 65536

lock = threading.Lock()
state = {}


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def u32(self):
        v = struct.unpack_from(">I", self.d, self.p)[0]
        self.p += 4
        return v

    def u64(self):
        v = struct.unpack_from(">Q", self.d, self.p)[0]
        self.p += 8
        return v

    def opaque(self):
        n = self.u32()
        v = self.d[self.p:self.p + n]
        self.p += (n + 3) & ~3
        return v


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def opaque(b):
    return u32(len(b)) + b + b"\0" * (-len(b) & 3)


def fattr(fh):
    is_dir = fh == ROOT_FH
    size = 4096 if is_dir else len(state["cache"])
    t = u32(1700000000) + u32(0)
    return (u32(NF3DIR if is_dir else NF3REG) + u32(0o755 if is_dir else 0o644) + u32(1) +
            u32(0) + u32(0) + u64(size) + u64(size) + u32(0) + u32(0) + u64(1) +
            u64(1 if is_dir else 2) + t + t + t)


def post_op(fh):
    return u32(1) + fattr(fh)


def wcc(fh):
    return u32(0) + post_op(fh)


def count(name):
    c = state["stats"]
    c[name] = c.get(name, 0) + 1


def jukebox(name):
    """True if this call of @name is answered NFS3ERR_JUKEBOX."""
    n = state["stats"].get(name, 0)
    if n <= state["jukebox"]:
        count("jukebox_" + name)
        return True
    return False


def nfs_call(proc, r):
    if proc == 0:
        return b""
    fh = r.opaque()
    if fh not in (ROOT_FH, FILE_FH):
        return u32(STALE) + u32(0)
    if proc == 1:  # GETATTR
        return u32(0) + fattr(fh)
    if proc == 2:  # SETATTR
        for _ in range(3):  # mode, uid, gid
            if r.u32():
                r.u32()
        if r.u32():
            size = r.u64()
            c = state["cache"]
            if size < len(c):
                del c[size:]
            else:
                c.extend(bytes(size - len(c)))
        return u32(0) + wcc(fh)
    if proc == 3:  # LOOKUP
        name = r.opaque()
        if fh != ROOT_FH or name != b"img":
            return u32(NOENT) + u32(0)
        return u32(0) + opaque(FILE_FH) + post_op(FILE_FH) + post_op(ROOT_FH)
    if proc == 4:  # ACCESS
        return u32(0) + post_op(fh) + u32(r.u32())
    if proc == 6:  # READ
        count("read")
        off, n = r.u64(), r.u32()
        if jukebox("read"):
            return u32(JUKEBOX) + u32(0)
        c = state["cache"]
        if state["short"] and n > 1 and off + n < len(c):
            n //= 2
            count("short_read")
        data = bytes(c[off:off + n])
        eof = off + len(data) >= len(c)
        return u32(0) + post_op(fh) + u32(len(data)) + u32(eof) + opaque(data)
    if proc == 7:  # WRITE
        count("write")
        off, n, stable = r.u64(), r.u32(), r.u32()
        data = r.opaque()[:n]
        if jukebox("write"):
            return u32(JUKEBOX) + wcc(fh)
        if state["short"] and len(data) > 1:
            data = data[:len(data) // 2]
            count("short_write")
        c = state["cache"]
        if off + len(data) > len(c):
            c.extend(bytes(off + len(data) - len(c)))
        c[off:off + len(data)] = data
        if stable != UNSTABLE:  # this range only: the rest stays in the cache
            with open(state["file"], "r+b") as f:
                f.seek(off)
                f.write(data)
                os.fsync(f.fileno())
            count("write_sync")
        return (u32(0) + wcc(fh) + u32(len(data)) + u32(FILE_SYNC if stable else UNSTABLE) +
                state["verf"])
    if proc == 21:  # COMMIT
        count("commit")
        if jukebox("commit"):
            return u32(JUKEBOX) + wcc(fh)
        commit_cache()
        return u32(0) + wcc(fh) + state["verf"]
    if proc == 18:  # FSSTAT
        return u32(0) + post_op(fh) + u64(1 << 30) * 3 + u64(1000) * 3 + u32(0)
    if proc == 19:  # FSINFO
        return (u32(0) + post_op(fh) + u32(MAX_IO) * 2 + u32(512) + u32(MAX_IO) * 2 +
                u32(512) + u32(4096) + u64(1 << 40) + u32(0) + u32(1) + u32(0x1b))
    if proc == 20:  # PATHCONF
        return u32(0) + post_op(fh) + u32(1) + u32(255) + u32(1) * 2 + u32(0) + u32(1)
    return None


def commit_cache():
    with open(state["file"], "r+b") as f:
        f.truncate(len(state["cache"]))
        f.write(state["cache"])
        os.fsync(f.fileno())


def mount_call(proc, r):
    if proc in (0, 3, 4):  # NULL, UMNT, UMNTALL
        return b""
    if proc == 1:  # MNT
        r.opaque()
        return u32(0) + opaque(ROOT_FH) + u32(1) + u32(1)
    if proc == 5:  # EXPORT
        return u32(1) + opaque(b"/export") + u32(0) + u32(0)
    return None


class Handler(socketserver.BaseRequestHandler):
    def recv_exact(self, n):
        b = b""
        while len(b) < n:
            part = self.request.recv(n - len(b))
            if not part:
                raise EOFError
            b += part
        return b

    def handle(self):
        try:
            while True:
                msg = b""
                while True:
                    hdr = struct.unpack(">I", self.recv_exact(4))[0]
                    msg += self.recv_exact(hdr & 0x7fffffff)
                    if hdr & 0x80000000:
                        break
                self.request.sendall(self.reply(msg))
        except (EOFError, ConnectionError):
            pass

    def reply(self, msg):
        r = Reader(msg)
        xid, _mtype, _rpcvers, prog, _vers, proc = (r.u32() for _ in range(6))
        for _ in range(2):  # credential, verifier
            r.u32()
            r.opaque()
        with lock:
            if prog == NFS_PROG:
                res = nfs_call(proc, r)
            elif prog == MOUNT_PROG:
                res = mount_call(proc, r)
            else:
                res = None
        head = u32(xid) + u32(1) + u32(0) + u32(0) + u32(0)
        body = head + (u32(0) + res if res is not None else u32(3))
        return u32(0x80000000 | len(body)) + body


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--jukebox", type=int, default=0)
    ap.add_argument("--short", action="store_true")
    a = ap.parse_args()
    with open(a.file, "wb") as f:
        f.truncate(a.size)
    state.update(file=a.file, cache=bytearray(a.size), verf=b"verf0001", crashes=0,
                 jukebox=a.jukebox, short=a.short, stats={})

    def crash(_sig, _frame):
        with lock:
            state["crashes"] += 1
            with open(a.file, "rb") as f:
                state["cache"] = bytearray(f.read())
            state["verf"] = b"verf%04d" % (state["crashes"] + 1)
        open(os.path.join(a.dir, "crashed.%d" % state["crashes"]), "w").close()

    def stop(_sig, _frame):
        with lock:
            json.dump(state["stats"], open(os.path.join(a.dir, "stats.json"), "w"))
        os._exit(0)

    signal.signal(signal.SIGUSR1, crash)
    signal.signal(signal.SIGUSR2, stop)
    signal.signal(signal.SIGTERM, stop)
    srv = Server(("127.0.0.1", 0), Handler)
    with open(os.path.join(a.dir, "pid"), "w") as f:
        f.write(str(os.getpid()))
    with open(os.path.join(a.dir, "port.tmp"), "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(os.path.join(a.dir, "port.tmp"), os.path.join(a.dir, "port"))
    srv.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    sys.exit(main())
