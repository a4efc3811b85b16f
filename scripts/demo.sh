#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The README's first command, the main job on an embedded default: install
# what is missing, build, define a "default" dir pool under ./var (its state
# directory under ./var too) with a thin qcow2 volume if they are not there
# yet, show the pool and the volume, and serve the pool's volumes over NBD
# in the foreground on a unix socket under ./var and on 127.0.0.1:10809 (or
# the next free port), until Ctrl-C. Safe to run again: it rebuilds
# incrementally and keeps the pool and the volume.
#
#   scripts/demo.sh           serve until Ctrl-C
#   scripts/demo.sh --check   serve, check the export with nbdinfo over both
#                             sockets, stop, exit (what CI runs)
#
#   VSTOR_DEMO_VOLUME (default demo.qcow2), VSTOR_DEMO_SIZE (default 20G),
#   VSTOR_DEMO_PORT (first port to try, default 10809).
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[[ ${1:-} == --check ]] && check=true

volume=${VSTOR_DEMO_VOLUME:-demo.qcow2}
size=${VSTOR_DEMO_SIZE:-20G}
first_port=${VSTOR_DEMO_PORT:-10809}

[[ ${VSTOR_NO_DEPS:-0} == 1 ]] || scripts/install-deps.sh
if [[ ! -f build/build.ninja ]]; then
	meson setup build
fi
ninja -C build
vstor=build/cli/vstor
vstor_nbd=build/nbd-server/vstor-nbd

mkdir -p var
var=$(cd var && pwd)
# The pools of the demo live under ./var, not in the user's state directory.
export VSTOR_STATE_DIR=$var/state
if ! "$vstor" pool-info default >/dev/null 2>&1; then
	"$vstor" pool-define-as default dir --target "$var/images"
fi
if ! "$vstor" pool-info default | grep -q '^State: *running'; then
	"$vstor" pool-build default
	"$vstor" pool-start default
fi
"$vstor" pool-autostart default >/dev/null
if "$vstor" vol-info "$volume" --pool default >/dev/null 2>&1; then
	echo "demo: volume $volume exists in pool default, keeping it"
else
	"$vstor" vol-create-as default "$volume" "$size" --format qcow2
fi
"$vstor" pool-list --details
"$vstor" vol-list default --details

# The first free TCP port on 127.0.0.1 from $first_port on.
port=$(python3 - "$first_port" <<'PY'
import socket, sys
p = int(sys.argv[1])
for port in range(p, p + 100):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    sys.exit("no free port")
PY
)
sock=$var/nbd.sock
pidfile=$var/nbd.pid
uri_unix="nbd+unix:///$volume?socket=$sock"
uri_tcp="nbd://127.0.0.1:$port/$volume"

cat <<MSG

demo: serving the volumes of pool default over NBD, each as an export named
after the volume (cache=writeback, up to 8 clients). The volume $volume:
  unix socket:  $uri_unix
  TCP:          $uri_tcp
Connect with:
  nbdinfo '$uri_unix'
  qemu-img info '$uri_tcp'
  qemu-system-x86_64 ... -drive file=nbd:unix:$sock:exportname=$volume,format=raw,if=virtio
Manage the pool with: VSTOR_STATE_DIR=$VSTOR_STATE_DIR $vstor vol-list default
MSG

if ! $check; then
	echo "Press Ctrl-C to stop."
	# exec: Ctrl-C reaches vstor-nbd itself, which finishes in-flight requests and flushes.
	exec "$vstor_nbd" -t -e 8 -k "$sock" -b 127.0.0.1 -p "$port" --pid-file "$pidfile" \
		--pool default
fi

rm -f "$pidfile"
"$vstor_nbd" -t -e 8 -k "$sock" -b 127.0.0.1 -p "$port" --pid-file "$pidfile" --pool default &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for ((i = 0; i < 500; i++)); do
	[[ -s $pidfile ]] && break
	kill -0 "$server" 2>/dev/null || { echo "demo: the server exited early" >&2; exit 1; }
	sleep 0.02
done
[[ -s $pidfile ]] || { echo "demo: the server did not start" >&2; exit 1; }
want=$(numfmt --from=iec "$size")
for uri in "$uri_unix" "$uri_tcp"; do
	got=$(PATH=/usr/bin:$PATH nbdinfo --size "$uri")
	if [[ $got != "$want" ]]; then
		echo "demo: nbdinfo on $uri says $got bytes, expected $want" >&2
		exit 1
	fi
	echo "demo: nbdinfo $uri: $got bytes, ok"
done
kill -TERM "$server"
wait "$server"
trap - EXIT
echo "demo: check passed"
