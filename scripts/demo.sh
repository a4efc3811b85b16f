#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The README's first command, the main job on an embedded default: install
# what is missing, build, create a thin qcow2 image under ./var if it is not
# there yet, show `vstor-img info` of it, and serve it over NBD in the
# foreground on a unix socket under ./var and on 127.0.0.1:10809 (or the
# next free port), until Ctrl-C. Safe to run again: it rebuilds
# incrementally and keeps the image.
#
#   scripts/demo.sh           serve until Ctrl-C
#   scripts/demo.sh --check   serve, check the export with nbdinfo over both
#                             sockets, stop, exit (what CI runs)
#
#   VSTOR_DEMO_IMAGE (default var/demo.qcow2), VSTOR_DEMO_SIZE (default 20G),
#   VSTOR_DEMO_PORT (first port to try, default 10809).
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[[ ${1:-} == --check ]] && check=true

image=${VSTOR_DEMO_IMAGE:-var/demo.qcow2}
size=${VSTOR_DEMO_SIZE:-20G}
first_port=${VSTOR_DEMO_PORT:-10809}

[[ ${VSTOR_NO_DEPS:-0} == 1 ]] || scripts/install-deps.sh
if [[ ! -f build/build.ninja ]]; then
	meson setup build
fi
ninja -C build
vstor_img=build/cli/vstor-img
vstor_nbd=build/nbd-server/vstor-nbd

mkdir -p "$(dirname "$image")"
if [[ -e $image ]]; then
	echo "demo: $image exists, keeping it"
else
	"$vstor_img" create -f qcow2 "$image" "$size"
fi
"$vstor_img" info "$image"

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
sock=$(cd "$(dirname "$image")" && pwd)/nbd.sock
pidfile=$(dirname "$sock")/nbd.pid
uri_unix="nbd+unix:///?socket=$sock"
uri_tcp="nbd://127.0.0.1:$port/"

cat <<MSG

demo: serving $image over NBD (cache=writeback, up to 8 clients)
  unix socket:  $uri_unix
  TCP:          $uri_tcp
Connect with:
  nbdinfo '$uri_unix'
  qemu-img info '$uri_tcp'
  qemu-system-x86_64 ... -drive file=nbd:unix:$sock,format=raw,if=virtio
MSG

if ! $check; then
	echo "Press Ctrl-C to stop."
	# exec: Ctrl-C reaches vstor-nbd itself, which finishes in-flight requests and flushes.
	exec "$vstor_nbd" -t -e 8 -f qcow2 -k "$sock" -b 127.0.0.1 -p "$port" --pid-file "$pidfile" \
		"$image"
fi

rm -f "$pidfile"
"$vstor_nbd" -t -e 8 -f qcow2 -k "$sock" -b 127.0.0.1 -p "$port" --pid-file "$pidfile" "$image" &
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
