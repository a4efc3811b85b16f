#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-nbd against malformed and hostile clients (a raw-socket client):
# bad magic, unknown and oversize options, requests past the end, oversize
# writes, writes to a read-only export, abrupt disconnects mid-request. The
# server must answer with the right error or hang up, never crash or hang,
# and never lose an acknowledged write. Also covers EXTENDED_HEADERS, which
# no client on Debian 12 speaks.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool python3 qemu-img
find_built VSTOR_NBD nbd-server/vstor-nbd

qemu_img create -f raw disk.raw 16M >/dev/null
qemu_img create -f raw ro.raw 16M >/dev/null
SOCK=$WORKDIR/nbd.sock
start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$SOCK" -f raw --pid-file "$WORKDIR/nbd.pid" \
	--export name=rw,file=disk.raw,format=raw \
	--export name=ro,file=ro.raw,format=raw,readonly=on
SERVER=$DAEMON_PID

PYTHONPATH=$VS_LIB_DIR timeout 120 python3 - "$SOCK" <<'PY' || fail "hostile-client checks"
import socket, struct, sys
from nbd_raw_client import *

path = sys.argv[1]

def expect_closed(c):
    try:
        c.s.settimeout(10)
        while c.s.recv(4096):
            pass
    except (ConnectionResetError, Closed):
        pass

# 1. Bad option magic: the server hangs up.
c = Client(path); c.greet(); c.send(struct.pack(">QII", 0x1122334455667788, OPT_GO, 0)); expect_closed(c)
# 2. Unknown client flags: hang up.
c = Client(path); c.greet(cflags=0x80); expect_closed(c)
# 3. Unknown option: NBD_REP_ERR_UNSUP, then the session continues.
c = Client(path); c.greet(); c.option(999, b"abc")
_, typ, _ = c.reply(); assert typ == (1 << 31) | 1, hex(typ)
# 4. Oversize option: TOO_BIG after draining, or a hang-up for absurd sizes.
c.option(OPT_LIST, b"x" * (70 * 1024))
_, typ, _ = c.reply(); assert typ == (1 << 31) | 9, hex(typ)
c.send(struct.pack(">QII", IHAVEOPT, OPT_LIST, 0xFFFFFFF0)); expect_closed(c)
# 5. Malformed GO (name length past the data): INVALID.
c = Client(path); c.greet(); c.option(OPT_GO, struct.pack(">I", 100) + b"rw")
_, typ, _ = c.reply(); assert typ == (1 << 31) | 3, hex(typ)
# 6. Unknown export: ERR_UNKNOWN; SET_META_CONTEXT before structured replies: INVALID.
c.option(OPT_GO, struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0))
_, typ, _ = c.reply(); assert typ == (1 << 31) | 6, hex(typ)
reps = c.set_meta(b"rw", [b"base:allocation"]); assert reps[-1][0] == (1 << 31) | 3, reps
# 7. Transmission with simple replies: a write, then errors that keep the connection.
c.go(b"rw")
c.request(CMD_WRITE, 4096, 512, cookie=11, payload=b"\xab" * 512)
ck, err, _ = c.read_reply(); assert (ck, err) == (11, 0)
c.request(CMD_READ, c.size - 100, 512, cookie=12)
ck, err, _ = c.read_reply(); assert (ck, err) == (12, 22), (ck, err)
c.request(CMD_WRITE, c.size - 100, 512, cookie=13, payload=b"\0" * 512)
ck, err, _ = c.read_reply(); assert (ck, err) == (13, 22), (ck, err)
c.request(CMD_READ, 0, 64 << 20, cookie=14)
ck, err, _ = c.read_reply(); assert ck == 14 and err in (22, 75), err
c.request(42, 0, 0, cookie=15)
ck, err, _ = c.read_reply(); assert (ck, err) == (15, 22), (ck, err)
c.request(CMD_READ, 0, 512, flags=FLAG_FAST_ZERO, cookie=16)
ck, err, _ = c.read_reply(); assert (ck, err) == (16, 22), (ck, err)
c.request(CMD_FLUSH, 0, 0, cookie=17)
ck, err, _ = c.read_reply(); assert (ck, err) == (17, 0)
# 8. A write that announces more than the server accepts: it hangs up.
c.request(CMD_WRITE, 0, 1 << 30, cookie=18); expect_closed(c)
# 9. Abrupt disconnect in the middle of a write payload.
c = Client(path); c.greet(); c.go(b"rw")
c.request(CMD_WRITE, 8192, 65536, cookie=19, payload=b"\x01" * 1000); c.close()
# 10. Read-only export: EPERM for writes, trims and zeroes.
c = Client(path); c.greet(); c.go(b"ro")
assert c.flags & 2, "READ_ONLY flag missing"
for i, cmd in enumerate((CMD_WRITE, CMD_TRIM, CMD_ZERO)):
    c.request(cmd, 0, 512, cookie=30 + i, payload=b"z" * 512 if cmd == CMD_WRITE else b"")
    ck, err, _ = c.read_reply(); assert (ck, err) == (30 + i, 1), (cmd, ck, err)
# 11. Bad request magic: hang up.
c.send(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 1, 0, 512)); expect_closed(c)

# 12. Extended headers: 64-bit requests, structured chunks with 32-byte headers.
c = Client(path); c.greet()
c.option(OPT_EXTENDED_HEADERS); _, typ, _ = c.reply(); assert typ == REP_ACK
c.extended = True
c.option(OPT_STRUCTURED_REPLY); _, typ, _ = c.reply(); assert typ == (1 << 31) | 10, hex(typ)
reps = c.set_meta(b"rw", [b"base:allocation", b"qemu:allocation-depth", b"other:thing"])
ids = [struct.unpack(">I", d[:4])[0] for t, d in reps if t == REP_META]
assert len(ids) == 2, reps
c.go(b"rw")
c.request(CMD_WRITE, 1 << 20, 4096, flags=FLAG_FUA, cookie=40, payload=b"\x5a" * 4096)
ck, err, chunks = c.read_reply(); assert (ck, err) == (40, 0) and chunks[-1][0] == TYPE_NONE
c.request(CMD_READ, 1 << 20, 8192, cookie=41)
ck, err, chunks = c.read_reply()
assert (ck, err) == (41, 0)
data = bytearray(8192)
for typ, p in chunks:
    off = struct.unpack(">Q", p[:8])[0] - (1 << 20)
    if typ == TYPE_DATA:
        data[off:off + len(p) - 8] = p[8:]
    else:
        assert typ == TYPE_HOLE, typ
assert bytes(data) == b"\x5a" * 4096 + bytes(4096), "extended read"
c.request(CMD_BS, 0, c.size, cookie=42)
ck, err, chunks = c.read_reply(); assert (ck, err) == (42, 0)
assert all(t == TYPE_BS_EXT for t, _ in chunks) and len(chunks) == 2, chunks
for t, p in chunks:
    ctx, count = struct.unpack(">II", p[:8])
    descs = [struct.unpack(">QQ", p[8 + 16 * i: 24 + 16 * i]) for i in range(count)]
    assert sum(l for l, _ in descs) <= c.size and descs, descs
# Zero with a 64-bit length beyond the export: EINVAL as an error chunk.
c.request(CMD_ZERO, 0, 1 << 40, cookie=43)
ck, err, chunks = c.read_reply(); assert (ck, err) == (43, 22), (ck, err)
c.request(CMD_DISC, 0, 0); c.close()

# 13. After all that, an acknowledged write is still there.
c = Client(path); c.greet(); c.go(b"rw")
c.request(CMD_READ, 4096, 512, cookie=50)
ck, err, chunks = c.read_reply(512)
assert err == 0 and chunks[0][2] == b"\xab" * 512, "acknowledged write lost"
c.close()
PY
kill -0 "$SERVER" 2>/dev/null || fail "server died"
# The data also reached the file.
python3 -c "
d = open('disk.raw','rb').read()
assert d[4096:4608] == b'\xab' * 512 and d[1 << 20:(1 << 20) + 4096] == b'\x5a' * 4096
" || fail "acknowledged writes missing from the image file"
log "ok"
