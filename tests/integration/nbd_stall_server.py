# SPDX-License-Identifier: LGPL-2.1-or-later
"""A minimal NBD server for tests: a zero-filled export of SIZE bytes whose
reads that touch [STALL_START, STALL_END) are held until a line arrives on
the FIFO named RELEASE. Fixed newstyle, NBD_OPT_GO / EXPORT_NAME, simple
replies only. Usage: nbd_stall_server.py SOCKET PIDFILE SIZE START END RELEASE"""
import os
import socket
import struct
import sys
import threading

sock_path, pidfile, size, start, end, fifo = sys.argv[1:7]
size, start, end = int(size), int(start), int(end)
released = threading.Event()


def wait_release():
    with open(fifo) as f:
        f.readline()
    released.set()


threading.Thread(target=wait_release, daemon=True).start()


def recv(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b


def serve(c):
    lock = threading.Lock()
    c.sendall(struct.pack(">QQH", 0x4E42444D41474943, 0x49484156454F5054, 3))
    recv(c, 4)
    while True:
        _, opt, ln = struct.unpack(">QII", recv(c, 16))
        data = recv(c, ln)
        if opt == 1:  # EXPORT_NAME
            c.sendall(struct.pack(">QH", size, 1 | 4) + bytes(124))
            break
        if opt == 7:  # GO
            info = struct.pack(">HQH", 0, size, 1 | 4)
            c.sendall(struct.pack(">QIII", 0x3E889045565A9, opt, 3, len(info)) + info)
            c.sendall(struct.pack(">QIII", 0x3E889045565A9, opt, 1, 0))
            break
        c.sendall(struct.pack(">QIII", 0x3E889045565A9, opt, (1 << 31) | 1, 0))

    def reply(cookie, data):
        with lock:
            c.sendall(struct.pack(">IIQ", 0x67446698, 0, cookie) + data)

    while True:
        magic, flags, typ, cookie, off, ln = struct.unpack(">IHHQQI", recv(c, 28))
        if typ == 2:
            return
        if typ == 1:
            recv(c, ln)
        if typ == 0 and off < end and off + ln > start and not released.is_set():
            def later(cookie=cookie, ln=ln):
                released.wait(60)
                reply(cookie, bytes(ln))
            threading.Thread(target=later, daemon=True).start()
            continue
        reply(cookie, bytes(ln) if typ == 0 else b"")


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
