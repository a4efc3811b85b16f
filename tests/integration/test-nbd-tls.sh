#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-nbd with TLS: x509 (with and without client certificates) and PSK,
# through nbdinfo/nbdcopy (libnbd) and qemu-img (QEMU's NBD client with
# tls-creds objects). With --tls=require a client that does not upgrade gets
# no export; wrong credentials get nothing either. Credentials without --tls
# mean --tls=require, and qemu-nbd's --object tls-creds-x509/tls-creds-psk
# with --tls-creds=ID work as with qemu-nbd.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool certtool psktool nbdinfo nbdcopy qemu-img
find_built VSTOR_NBD nbd-server/vstor-nbd

# --- a CA, a server and a client certificate, and a client of another CA ---
tls_pki

qemu_img create -f raw disk.raw 16M >/dev/null
python3 -c "
import random
r = random.Random(3)
with open('disk.raw','r+b') as f:
    f.seek(1 << 20); f.write(bytes(r.getrandbits(8) for _ in range(1 << 20)))"

# --- x509, required ---
S=$WORKDIR/x.sock
start_daemon "$WORKDIR/x.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$S" --pid-file "$WORKDIR/x.pid" -f raw \
	--tls=require --tls-certificates=pki/server disk.raw
nbdinfo --json "nbds+unix:///?socket=$S&tls-certificates=$WORKDIR/pki/client" >info.json ||
	fail "nbdinfo over x509 TLS"
python3 -c "
import json
d = json.load(open('info.json'))
assert d['TLS'] is True and d['exports'][0]['export-size'] == 16 << 20, d" ||
	fail "TLS not reported by nbdinfo"
nbdcopy "nbds+unix:///?socket=$S&tls-certificates=$WORKDIR/pki/client" copy.raw
cmp copy.raw disk.raw || fail "nbdcopy over TLS read different data"
# Plain client against --tls=require: no export.
assert_fails nbdinfo "nbd+unix:///?socket=$S"
# A client that does not trust the server's CA (QEMU verifies the server; libnbd 1.14 does not
# verify peers on unix sockets).
assert_fails qemu-img info --object "tls-creds-x509,id=tls0,endpoint=client,dir=$WORKDIR/pki/other" \
	--image-opts "driver=nbd,server.type=unix,server.path=$S,tls-creds=tls0,tls-hostname=localhost"
# qemu-img with a tls-creds-x509 object.
qemu_img info --object "tls-creds-x509,id=tls0,endpoint=client,dir=$WORKDIR/pki/client" \
	--image-opts "driver=nbd,server.type=unix,server.path=$S,tls-creds=tls0,tls-hostname=localhost" >qinfo.txt ||
	fail "qemu-img info over x509 TLS"
assert_grep "virtual size: 16 MiB" qinfo.txt "qemu-img info over TLS"
qemu_img compare --object "tls-creds-x509,id=tls0,endpoint=client,dir=$WORKDIR/pki/client" \
	--image-opts driver=file,filename=copy.raw \
	"driver=nbd,server.type=unix,server.path=$S,tls-creds=tls0,tls-hostname=localhost" ||
	fail "qemu-img compare over TLS"
stop_pid "$DAEMON_PID"

# --- x509 with --tls-verify-peer: the client must present a certificate ---
S=$WORKDIR/v.sock
start_daemon "$WORKDIR/v.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$S" --pid-file "$WORKDIR/v.pid" -f raw \
	--tls=require --tls-certificates=pki/server --tls-verify-peer disk.raw
nbdinfo "nbds+unix:///?socket=$S&tls-certificates=$WORKDIR/pki/client" >/dev/null ||
	fail "client certificate refused"
mkdir -p pki/nocert && cp pki/ca-cert.pem pki/nocert/
assert_fails nbdinfo "nbds+unix:///?socket=$S&tls-certificates=$WORKDIR/pki/nocert"
stop_pid "$DAEMON_PID"

# --- PSK, optional TLS (--tls=on) ---
psktool -u alice -p keys.psk >/dev/null 2>&1
psktool -u mallory -p wrong.psk >/dev/null 2>&1
S=$WORKDIR/p.sock
start_daemon "$WORKDIR/p.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$S" --pid-file "$WORKDIR/p.pid" -f raw \
	--tls=on --tls-psk=keys.psk disk.raw
nbdinfo --json "nbds+unix://alice@/?socket=$S&tls-psk-file=$WORKDIR/keys.psk" \
	>info.json || fail "nbdinfo over PSK"
python3 -c "import json; assert json.load(open('info.json'))['TLS'] is True" || fail "PSK not used"
# --tls=on: a plain client is still served.
nbdinfo "nbd+unix:///?socket=$S" >/dev/null || fail "plain client refused with --tls=on"
assert_fails nbdinfo "nbds+unix://mallory@/?socket=$S&tls-psk-file=$WORKDIR/wrong.psk"
mkdir -p qpsk && cp keys.psk qpsk/keys.psk
qemu_img compare --object "tls-creds-psk,id=tls0,endpoint=client,dir=$WORKDIR/qpsk,username=alice" \
	--image-opts driver=file,filename=copy.raw \
	"driver=nbd,server.type=unix,server.path=$S,tls-creds=tls0" ||
	fail "qemu-img compare over PSK"
stop_pid "$DAEMON_PID"

# --- credentials without --tls: TLS is required (qemu-nbd's rule) ---
S=$WORKDIR/d.sock
start_daemon "$WORKDIR/d.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$S" --pid-file "$WORKDIR/d.pid" -f raw \
	--tls-certificates=pki/server disk.raw
assert_fails nbdinfo "nbd+unix:///?socket=$S"
assert_fails python3 -c "
import sys; sys.path.insert(0, '$VS_LIB_DIR')
import nbd_raw_client as n
c = n.Client('$S'); c.greet(); c.go()" # a plaintext NBD_OPT_GO gets NBD_REP_ERR_TLS_REQD
nbdinfo "nbds+unix:///?socket=$S&tls-certificates=$WORKDIR/pki/client" >/dev/null ||
	fail "TLS client refused by a server with credentials"
stop_pid "$DAEMON_PID"

# --- a client that stops in the TLS handshake is dropped by the handshake limit ---
S=$WORKDIR/h.sock
start_daemon "$WORKDIR/h.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$S" --pid-file "$WORKDIR/h.pid" -f raw \
	--tls-certificates=pki/server --handshake-limit=1 disk.raw
timeout 60 python3 -c "
import sys, time; sys.path.insert(0, '$VS_LIB_DIR')
import nbd_raw_client as n
c = n.Client('$S'); c.greet(); c.option(n.OPT_STARTTLS)
assert c.reply()[1] == n.REP_ACK
t0 = time.monotonic()
try:
    c.recv(1)  # no ClientHello from us: the server must hang up
    raise SystemExit('the server sent data')
except n.Closed:
    pass
print('stalled TLS handshake dropped after %.1f s' % (time.monotonic() - t0))" ||
	fail "a stalled TLS handshake was not dropped"
nbdinfo "nbds+unix:///?socket=$S&tls-certificates=$WORKDIR/pki/client" >/dev/null ||
	fail "TLS client after a stalled handshake"
stop_pid "$DAEMON_PID"

# --- qemu-nbd's --object tls-creds-x509 + --tls-creds (verify-peer defaults to on) ---
S=$WORKDIR/o.sock
start_daemon "$WORKDIR/o.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$S" --pid-file "$WORKDIR/o.pid" -f raw \
	--object "tls-creds-x509,id=tls0,dir=$WORKDIR/pki/server,endpoint=server" --tls-creds=tls0 \
	disk.raw
qemu_img compare --object "tls-creds-x509,id=tls0,endpoint=client,dir=$WORKDIR/pki/client" \
	--image-opts driver=file,filename=copy.raw \
	"driver=nbd,server.type=unix,server.path=$S,tls-creds=tls0,tls-hostname=localhost" ||
	fail "qemu-img against --object tls-creds-x509 --tls-creds"
nbdinfo "nbds+unix:///?socket=$S&tls-certificates=$WORKDIR/pki/client" >/dev/null ||
	fail "nbdinfo against --object tls-creds-x509 --tls-creds"
assert_fails nbdinfo "nbd+unix:///?socket=$S"
assert_fails nbdinfo "nbds+unix:///?socket=$S&tls-certificates=$WORKDIR/pki/nocert"
stop_pid "$DAEMON_PID"
# ... and tls-creds-psk (DIR/keys.psk)
S=$WORKDIR/op.sock
start_daemon "$WORKDIR/op.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$S" --pid-file "$WORKDIR/op.pid" -f raw \
	--object "tls-creds-psk,id=p0,dir=$WORKDIR/qpsk,endpoint=server" --tls-creds p0 disk.raw
qemu_img compare --object "tls-creds-psk,id=tls0,endpoint=client,dir=$WORKDIR/qpsk,username=alice" \
	--image-opts driver=file,filename=copy.raw \
	"driver=nbd,server.type=unix,server.path=$S,tls-creds=tls0" ||
	fail "qemu-img against --object tls-creds-psk --tls-creds"
assert_fails nbdinfo "nbd+unix:///?socket=$S"
stop_pid "$DAEMON_PID"
assert_fails "$VSTOR_NBD" -k "$WORKDIR/bad.sock" --tls-creds=nope disk.raw
assert_grep "nope" "$WORKDIR/err" "--tls-creds without its object"
# (secret objects are taken now: encrypted images; iothread is qemu-nbd's, not ours)
assert_fails timeout 20 "$VSTOR_NBD" -k "$WORKDIR/bad.sock" --object "iothread,id=io0" disk.raw
assert_grep "Unsupported --object type" "$WORKDIR/err" "--object of another type"

# Bad TLS configuration is refused at start-up with a clear message.
assert_fails "$VSTOR_NBD" -k "$WORKDIR/bad.sock" --tls=require disk.raw
assert_grep "tls-certificates" "$WORKDIR/err" "--tls without credentials"
assert_fails "$VSTOR_NBD" -k "$WORKDIR/bad.sock" --tls-certificates="$WORKDIR/nowhere" disk.raw
assert_grep "certificate" "$WORKDIR/err" "missing certificate files"
log "ok"
