#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The README's first command: install what is missing, build, create a thin
# qcow2 image under ./var if it is not there yet, and show `vstor-img info`
# of it. Safe to run again: it rebuilds incrementally and keeps the image.
#   VSTOR_DEMO_IMAGE (default var/demo.qcow2), VSTOR_DEMO_SIZE (default 20G).
set -euo pipefail
cd "$(dirname "$0")/.."

image=${VSTOR_DEMO_IMAGE:-var/demo.qcow2}
size=${VSTOR_DEMO_SIZE:-20G}

[[ ${VSTOR_NO_DEPS:-0} == 1 ]] || scripts/install-deps.sh
if [[ ! -f build/build.ninja ]]; then
	meson setup build
fi
ninja -C build
vstor_img=build/cli/vstor-img

mkdir -p "$(dirname "$image")"
if [[ -e $image ]]; then
	echo "demo: $image exists, keeping it"
else
	"$vstor_img" create -f qcow2 "$image" "$size"
fi
"$vstor_img" info "$image"
