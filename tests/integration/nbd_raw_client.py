# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small raw NBD client for tests: speaks the wire protocol directly so
tests can send what libnbd never would (malformed options, bad magic,
oversize requests) and exercise extended headers, which no client on
Debian 12 negotiates."""
import socket
import struct

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
REQ_MAGIC = 0x25609513
EXT_REQ_MAGIC = 0x21E41C71
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF
EXT_MAGIC = 0x6E8A278C

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META, OPT_SET_META, OPT_EXTENDED_HEADERS = 8, 9, 10, 11
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_ZERO, CMD_BS = range(8)
FLAG_FUA, FLAG_NO_HOLE, FLAG_DF, FLAG_REQ_ONE, FLAG_FAST_ZERO = 1, 2, 4, 8, 16
TYPE_NONE, TYPE_DATA, TYPE_HOLE, TYPE_BS, TYPE_BS_EXT = 0, 1, 2, 5, 6
TYPE_ERROR = (1 << 15) | 1


class Closed(Exception):
    pass


class Client:
    def __init__(self, path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.extended = False
        self.structured = False

    def recv(self, n):
        buf = b""
        while len(buf) < n:
            b = self.s.recv(n - len(buf))
            if not b:
                raise Closed()
            buf += b
        return buf

    def send(self, b):
        self.s.sendall(b)

    def greet(self, cflags=3):
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        assert magic == NBDMAGIC and opt == IHAVEOPT, (hex(magic), hex(opt))
        self.send(struct.pack(">I", cflags))
        return hflags

    def option(self, opt, data=b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def reply(self):
        magic, opt, typ, ln = struct.unpack(">QIII", self.recv(20))
        assert magic == REP_MAGIC, hex(magic)
        return opt, typ, self.recv(ln)

    def replies_until_ack(self):
        out = []
        while True:
            opt, typ, data = self.reply()
            out.append((typ, data))
            if typ == REP_ACK or typ & (1 << 31):
                return out

    def go(self, name=b""):
        self.option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        reps = self.replies_until_ack()
        assert reps[-1][0] == REP_ACK, reps
        for typ, data in reps:
            if typ == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                self.size, self.flags = struct.unpack(">QH", data[2:12])
        return reps

    def set_meta(self, name, queries):
        body = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
        for q in queries:
            body += struct.pack(">I", len(q)) + q
        self.option(OPT_SET_META, body)
        return self.replies_until_ack()

    def request(self, typ, offset, length, flags=0, cookie=1, payload=b""):
        if self.extended:
            hdr = struct.pack(">IHHQQQ", EXT_REQ_MAGIC, flags, typ, cookie, offset, length)
        else:
            hdr = struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, offset, length)
        self.send(hdr + payload)

    def read_reply(self, read_len=0):
        """Returns (cookie, error, chunks); chunks are (type, offset, payload)."""
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == SIMPLE_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recv(12))
            data = self.recv(read_len) if err == 0 and read_len else b""
            return cookie, err, [(TYPE_DATA, None, data)]
        chunks, err = [], 0
        while True:
            if magic == EXT_MAGIC:
                flags, typ, cookie, off, ln = struct.unpack(">HHQQQ", self.recv(28))
            elif magic == STRUCT_MAGIC:
                flags, typ, cookie, ln = struct.unpack(">HHQI", self.recv(16))
            else:
                raise AssertionError("bad reply magic %x" % magic)
            payload = self.recv(ln)
            if typ & (1 << 15):
                err = struct.unpack(">I", payload[:4])[0]
            chunks.append((typ, payload))
            if flags & 1:
                return cookie, err, chunks
            magic = struct.unpack(">I", self.recv(4))[0]

    def close(self):
        self.s.close()
