#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor's NBD client (libnbd) over TLS: vstor-img info/convert/compare from
# nbds:// and nbds+unix:// names served by vstor-nbd --tls and by qemu-nbd
# --object tls-creds-x509, with the client's credentials given as QEMU
# gives them (--object tls-creds-x509,id=..,dir=..); a client that trusts
# another CA fails clearly with exit 1, and so does a plain nbd:// client
# against a server that requires TLS.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool certtool qemu-nbd qemu-img
require_vstor_img
find_built VSTOR_NBD nbd-server/vstor-nbd

tls_pki

qemu_img create -f raw disk.raw 8M >/dev/null
python3 -c "
import random
r = random.Random(7)
with open('disk.raw','r+b') as f:
    f.seek(1 << 20); f.write(bytes(r.getrandbits(8) for _ in range(1 << 20)))"
CLIENT="tls-creds-x509,id=tls0,endpoint=client,dir=$WORKDIR/pki/client"
OTHER="tls-creds-x509,id=tls0,endpoint=client,dir=$WORKDIR/pki/other"

# --- vstor-nbd --tls=require on TCP and on a unix socket ---
PORT=$(free_port)
start_daemon "$WORKDIR/v.pid" 20 "$VSTOR_NBD" -t -r -b 127.0.0.1 -p "$PORT" -x exp \
	--pid-file "$WORKDIR/v.pid" -f raw --tls=require --tls-certificates=pki/server disk.raw
vstor_img info --object "$CLIENT" --output=json "nbds://127.0.0.1:$PORT/exp" >info.json ||
	fail "vstor-img info from nbds:// (vstor-nbd)"
python3 -c "
import json
d = json.load(open('info.json'))
assert d['virtual-size'] == 8 << 20, d" || fail "size over nbds://"
vstor_img convert --object "$CLIENT" -f raw -O qcow2 "nbds://127.0.0.1:$PORT/exp" v.qcow2 ||
	fail "vstor-img convert from nbds:// (vstor-nbd)"
qemu_img compare -q disk.raw v.qcow2 || fail "convert from nbds://: content differs"
# tls-creds=ID names the object among several.
vstor_img compare --object "$OTHER" --object "tls-creds-x509,id=good,dir=$WORKDIR/pki/client" \
	-f raw -F raw "nbds://127.0.0.1:$PORT/exp?tls-creds=good" disk.raw >/dev/null ||
	fail "tls-creds=ID in the name"
# A client that trusts another CA: a clear error, exit 1.
rc=0
vstor_img info --object "$OTHER" "nbds://127.0.0.1:$PORT/exp" >/dev/null 2>err.txt || rc=$?
assert_eq "$rc" 1 "vstor-img info with the wrong CA exits 1"
grep -qiE "certificate|verif|tls" err.txt || fail "wrong CA error is unclear: $(cat err.txt)"
# A plain client against --tls=require: refused, exit 1.
rc=0
vstor_img info "nbd://127.0.0.1:$PORT/exp" >/dev/null 2>err.txt || rc=$?
assert_eq "$rc" 1 "plain nbd:// against a TLS-only server exits 1"
grep -qi "tls" err.txt || fail "plain client error does not name TLS: $(cat err.txt)"
stop_pid "$(cat "$WORKDIR/v.pid")"

S=$WORKDIR/v.sock
start_daemon "$WORKDIR/u.pid" 20 "$VSTOR_NBD" -t -r -k "$S" -x exp --pid-file "$WORKDIR/u.pid" \
	-f raw --tls=require --tls-certificates=pki/server disk.raw
vstor_img compare --object "$CLIENT" -f raw -F raw "nbds+unix:///exp?socket=$S" disk.raw \
	>/dev/null || fail "vstor-img compare over nbds+unix://"
# libnbd's own form: the certificates directory in the name.
vstor_img compare -f raw -F raw \
	"nbds+unix:///exp?socket=$S&tls-certificates=$WORKDIR/pki/client" disk.raw >/dev/null ||
	fail "nbds+unix:// with tls-certificates="
stop_pid "$(cat "$WORKDIR/u.pid")"

# --- qemu-nbd --object tls-creds-x509 ---
PORT=$(free_port)
start_daemon "$WORKDIR/q.pid" 20 qemu-nbd -t -r -b 127.0.0.1 -p "$PORT" -x exp -f raw \
	--object "tls-creds-x509,id=s0,endpoint=server,dir=$WORKDIR/pki/server" --tls-creds=s0 \
	--pid-file="$WORKDIR/q.pid" disk.raw
vstor_img convert --object "$CLIENT" -f raw -O raw "nbds://localhost:$PORT/exp" q.raw ||
	fail "vstor-img convert from nbds:// (qemu-nbd)"
cmp q.raw disk.raw || fail "convert from qemu-nbd over TLS: content differs"
assert_fails "$VSTOR_IMG" info --object "$OTHER" "nbds://localhost:$PORT/exp"

# --- vstord: an nbd node with tls-creds (qsd's blockdev-add), re-exported plainly ---
find_built VSTORD vstord/vstord
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--object "tls-creds-x509,id=c0,endpoint=client,dir=$WORKDIR/pki/client" \
	--blockdev "{\"driver\": \"nbd\", \"node-name\": \"n\", \"export\": \"exp\",
		\"server\": {\"type\": \"inet\", \"host\": \"localhost\", \"port\": \"$PORT\"},
		\"tls-creds\": \"c0\", \"tls-hostname\": \"localhost\", \"read-only\": true}" \
	--nbd-server "addr.type=unix,addr.path=$WORKDIR/vd.sock" --export "type=nbd,id=e,node-name=n"
vstor_img compare -f raw -F raw "nbd+unix:///n?socket=$WORKDIR/vd.sock" disk.raw >/dev/null ||
	fail "vstord's nbd node over TLS reads different data"
stop_pid "$(cat "$WORKDIR/vd.pid")"
assert_fails timeout 30 "$VSTORD" \
	--object "tls-creds-x509,id=c0,endpoint=client,dir=$WORKDIR/pki/other" \
	--blockdev "{\"driver\": \"nbd\", \"node-name\": \"n\", \"export\": \"exp\",
		\"server\": {\"type\": \"inet\", \"host\": \"localhost\", \"port\": \"$PORT\"},
		\"tls-creds\": \"c0\", \"read-only\": true}"
stop_pid "$(cat "$WORKDIR/q.pid")"
log "ok"
