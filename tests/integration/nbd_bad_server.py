# SPDX-License-Identifier: LGPL-2.1-or-later
"""An NBD server that breaks the protocol in one chosen way, for testing how
vstor's NBD client takes it. Fixed newstyle, structured replies, NBD_OPT_GO;
the export reads as bytes 0x5a. Usage:
nbd_bad_server.py SOCKET PIDFILE MODE, MODE one of
  good           a correct server (the control)
  short-read     a read's structured reply covers only its first 512 bytes
  huge-size      the export is 2^63 + 4096 bytes
  over-max-size  the export is 2^63 - 512 bytes: past qemu's limit, 2^63 - 1 GiB
  max-size       the export is 2^63 - 1 GiB bytes, qemu's limit (valid)
  unaligned-size minimum block size 4096, export size 1 MiB + 512
  no-export-info NBD_OPT_GO is acknowledged without NBD_INFO_EXPORT"""
import os
import socket
import struct
import sys
import threading

sock_path, pidfile, mode = sys.argv[1:4]
REP = 0x3E889045565A9
SIZE = 1 << 20


def recv(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b


def rep(c, opt, typ, data=b""):
    c.sendall(struct.pack(">QIII", REP, opt, typ, len(data)) + data)


def chunk(c, cookie, typ, payload, done=True):
    c.sendall(struct.pack(">IHHQI", 0x668E33EF, 1 if done else 0, typ, cookie, len(payload)) +
              payload)


def serve(c):
    c.sendall(struct.pack(">QQH", 0x4E42444D41474943, 0x49484156454F5054, 3))
    recv(c, 4)
    structured = False
    while True:
        _, opt, ln = struct.unpack(">QII", recv(c, 16))
        recv(c, ln)
        if opt == 8:  # STRUCTURED_REPLY
            structured = True
            rep(c, opt, 1)
        elif opt == 7:  # GO
            size, minbs = SIZE, 1
            if mode == "huge-size":
                size = (1 << 63) + 4096
            elif mode == "over-max-size":
                size = (1 << 63) - 512
            elif mode == "max-size":
                size = (1 << 63) - (1 << 30)
            elif mode == "unaligned-size":
                size, minbs = SIZE + 512, 4096
            if mode != "no-export-info":
                rep(c, opt, 3, struct.pack(">HQH", 0, size, 1 | 4))
            rep(c, opt, 3, struct.pack(">HIII", 3, minbs, 4096, 1 << 20))
            rep(c, opt, 1)
            break
        else:
            rep(c, opt, (1 << 31) | 1)
    while True:
        _, _, typ, cookie, off, ln = struct.unpack(">IHHQQI", recv(c, 28))
        if typ == 2:  # DISC
            return
        if typ == 1:
            recv(c, ln)
        if typ == 0 and structured:
            n = 512 if mode == "short-read" and ln > 512 else ln
            chunk(c, cookie, 1, struct.pack(">Q", off) + b"\x5a" * n)
        elif structured:
            chunk(c, cookie, 0, b"")
        else:
            c.sendall(struct.pack(">IIQ", 0x67446698, 0, cookie) +
                      (b"\x5a" * ln if typ == 0 else b""))


s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sock_path)
s.listen(8)
with open(pidfile, "w") as f:
    f.write("%d\n" % os.getpid())
while True:
    conn, _ = s.accept()

    def run(conn=conn):
        try:
            serve(conn)
        except (EOFError, OSError):
            pass
        conn.close()
    threading.Thread(target=run, daemon=True).start()
