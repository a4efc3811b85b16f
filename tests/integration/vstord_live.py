#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The host side of test-vstord-guest-live: while the guest runs
tests/vm/guest/live-verify.sh, change the graph under its export through
vstord's QMP and check what the guest sees.

  vstord_live.py WORKDIR NODE EXPORT-ID VOLUME [RESIZE-BYTES]

WORKDIR holds vd.sock (QMP), guest.console and ctl.raw (the guest's
control disk); VOLUME is a volume of the dir pool "live". NODE is the exported node.
Steps: blockdev-snapshot-sync, active block-commit with pivot,
blockdev-mirror to a vol: node of a dir pool with pivot, block_resize
(unless RESIZE-BYTES is absent or 0), block_set_io_throttle on the export. After
each graph change the guest must finish two more rounds. Prints the node
the export ends on."""
import os
import re
import sys
import time

from qmp import QMP

WORKDIR, NODE, EXPORT, VOLUME = sys.argv[1:5]
RESIZE = int(sys.argv[5]) if len(sys.argv) > 5 else 0
CONSOLE = os.path.join(WORKDIR, "guest.console")
LIMIT = 2 << 20
DEADLINE = time.monotonic() + 600


def fail(msg):
    sys.stderr.write("vstord_live: %s\n" % msg)
    try:
        sys.stderr.write("".join(open(CONSOLE, errors="replace").readlines()[-20:]))
    except OSError:
        pass
    sys.exit(1)


def console():
    try:
        return open(CONSOLE, errors="replace").read()
    except OSError:
        return ""


def wait_console(pattern, secs=240):
    """The first match of PATTERN on the guest's console, polled with a deadline."""
    end = min(time.monotonic() + secs, DEADLINE)
    while True:
        text = console()
        m = re.search(pattern, text)
        if m:
            return m
        if "VSTOR-RESULT" in text:
            fail("the guest ended while the host waited for %r" % pattern)
        if time.monotonic() > end:
            fail("no %r on the guest's console in %d s" % (pattern, secs))
        time.sleep(0.1)


def rounds():
    return len(re.findall(r"VSTOR-LIVE: round \d+ ok", console()))


def more_rounds(n):
    """Wait until the guest has verified N more rounds from now."""
    want = rounds() + n
    wait_console(r"(?s)(VSTOR-LIVE: round \d+ ok.*){%d}" % want)


def ctl(cmd):
    with open(os.path.join(WORKDIR, "ctl.raw"), "r+b") as f:
        f.write(cmd.encode())
        f.flush()
        os.fsync(f.fileno())


def ok(q, name, raw=None, **args):
    args = raw or {k.replace("_", "-"): v for k, v in args.items()}
    r = q.execute(name, args)
    if "error" in r:
        fail("%s %s: %s" % (name, args, r["error"]))
    return r["return"]


def throttle(bps):
    """block_set_io_throttle's arguments (QEMU spells them with "_")."""
    args = {"id": EXPORT, "bps": bps}
    for k in ("bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"):
        args[k] = 0
    return args


def event(q, name, job, secs=240):
    """Event NAME of job JOB; an error or a cancel on the way fails."""
    q.sock.settimeout(secs)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        ev = q.events.pop(0) if q.events else q.read()
        if "event" not in ev:
            continue
        data = ev.get("data", {})
        if data.get("device", data.get("id")) != job:
            continue
        if ev["event"] in ("BLOCK_JOB_ERROR", "BLOCK_JOB_CANCELLED") or (
                ev["event"] == "BLOCK_JOB_COMPLETED" and "error" in data):
            fail("job %s: %s" % (job, ev))
        if ev["event"] == name:
            return data
    fail("no %s for job %s in %d s" % (name, job, secs))


def pivot_job(q, job):
    event(q, "BLOCK_JOB_READY", job)
    ok(q, "block-job-complete", device=job)
    event(q, "BLOCK_JOB_COMPLETED", job)


def exported_node(q):
    for e in ok(q, "query-block-exports"):
        if e["id"] == EXPORT:
            return e["node-name"]
    fail("export %s is gone" % EXPORT)


def main():
    q = QMP(os.path.join(WORKDIR, "vd.sock"), timeout=60)
    wait_console(r"VSTOR-LIVE: round 1 ok", 300)

    # 1. An external snapshot: the export moves to the overlay.
    ok(q, "blockdev-snapshot-sync", node_name=NODE, snapshot_node_name="ov",
       snapshot_file=os.path.join(WORKDIR, "ov.qcow2"), format="qcow2")
    if exported_node(q) != "ov":
        fail("the export is not on the overlay after the snapshot")
    more_rounds(2)

    # 2. Active commit of the overlay into its base, with the pivot.
    ok(q, "block-commit", job_id="commit", device="ov")
    more_rounds(1)
    pivot_job(q, "commit")
    if exported_node(q) != NODE:
        fail("the export is not back on %s after the commit" % NODE)
    more_rounds(2)

    # 3. A mirror to a volume of a dir pool, with the pivot.
    ok(q, "blockdev-add", driver="vol", node_name="tgt-vol", pool="live", volume=VOLUME)
    ok(q, "blockdev-add", driver="qcow2", node_name="tgt", file="tgt-vol")
    ok(q, "blockdev-mirror", job_id="mirror", device=NODE, target="tgt", sync="full")
    more_rounds(1)
    pivot_job(q, "mirror")
    if exported_node(q) != "tgt":
        fail("the export is not on the mirror's target after the pivot")
    more_rounds(2)

    # 4. A resize the guest sees (vhost-user-blk only: NBD has no resize notice).
    if RESIZE:
        ok(q, "block_resize", node_name="tgt", size=RESIZE)
    ctl("P2")
    if RESIZE:
        wait_console(r"VSTOR-LIVE: resized %d\b" % (RESIZE // 512))

    # 5. Throttling: the guest's own measure within 10% of the limit.
    wait_console(r"VSTOR-LIVE: throttle-wait")
    ok(q, "block_set_io_throttle", throttle(LIMIT))
    ctl("T1")
    rate = int(wait_console(r"VSTOR-LIVE: throttled-rate (\d+)").group(1))
    print("throttled: %d B/s (limit %d)" % (rate, LIMIT), file=sys.stderr)
    if abs(rate - LIMIT) > LIMIT / 10:
        fail("the guest wrote %d B/s under a limit of %d B/s" % (rate, LIMIT))
    ok(q, "block_set_io_throttle", throttle(0))
    ctl("T0")
    rate = int(wait_console(r"VSTOR-LIVE: unthrottled-rate (\d+)").group(1))
    print("unthrottled: %d B/s" % rate, file=sys.stderr)
    if rate < LIMIT * 3 // 2:
        fail("the guest wrote %d B/s after the limits went off" % rate)
    wait_console(r"VSTOR-LIVE: md5 ")
    print(exported_node(q))


if __name__ == "__main__":
    main()
