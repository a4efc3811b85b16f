# SPDX-License-Identifier: LGPL-2.1-or-later
"""A libnbd client that keeps QD requests in flight for a while and records
when each one completed (the client's clock): what throttling tests measure.

    from nbd_load import load
    t = load("nbd+unix:///e?socket=/p", secs=3, qd=32, size=4096, write=False)
    rate(t, 0, 3)  # completions per second within [0, 3) s of the start

As a program: nbd_load.py URI SECS QD SIZE read|write prints the count, the
window and the rate as JSON.
"""
import json
import sys
import time

import nbd


def load(uri, secs, qd=32, size=4096, write=False, on_tick=None):
    """Completion times (seconds since the start) of the requests that
    completed within SECS; on_tick(elapsed) is called between polls."""
    h = nbd.NBD()
    h.connect_uri(uri)
    span = max(h.get_size() // size, 1)
    bufs = [nbd.Buffer(size) for _ in range(qd)]
    free = list(range(qd))
    inflight = {}
    done = []
    nxt = 0
    start = time.monotonic()
    end = start + secs
    while True:
        now = time.monotonic()
        while free and now < end:
            b = free.pop()
            off = (nxt % span) * size
            nxt += 1
            if write:
                c = h.aio_pwrite(bufs[b], off)
            else:
                c = h.aio_pread(bufs[b], off)
            inflight[c] = b
        if not inflight:
            break
        h.poll(100 if now < end else 1000)
        now = time.monotonic()
        for c in list(inflight):
            if h.aio_command_completed(c):
                free.append(inflight.pop(c))
                if now <= end:
                    done.append(now - start)
        if on_tick:
            on_tick(now - start)
    h.shutdown()
    return done


def rate(times, t0, t1):
    """Completions per second within [t0, t1)."""
    return sum(1 for t in times if t0 <= t < t1) / (t1 - t0)


if __name__ == "__main__":
    uri, secs, qd, size, op = sys.argv[1:6]
    t = load(uri, float(secs), int(qd), int(size), op == "write")
    print(json.dumps({"ops": len(t), "secs": float(secs), "iops": len(t) / float(secs)}))
