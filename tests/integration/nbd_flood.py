# SPDX-License-Identifier: LGPL-2.1-or-later
"""Hostile crowds against an NBD server on a unix socket, for
test-nbd-limits.sh. Each mode prints what it measured and exits non-zero
(with a message) when a bound does not hold.

  idle SOCKET N          N connections that never send a byte, while a
                         client that connected first (and one that connects
                         after the crowd) keep reading; reports their latency
  limits SOCKET N HS     as idle, against a server with the default
                         connection limit and a handshake limit of HS s:
                         most of the crowd is closed without a greeting, the
                         rest is dropped after about HS s, the client stays
  stall SOCKET T N       N clients that stop in the middle of a 32 MiB write
                         (and one in the middle of a request header) are
                         dropped after about T s; an idle client is not
  hogs SOCKET PID N      N clients pipeline 32 MiB reads and never read the
                         replies; reports the server's VmRSS/VmHWM once it
                         stops growing, while a well-behaved client is served
"""
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd_raw_client as nbd  # noqa: E402


def die(msg):
    print("nbd_flood: " + msg, file=sys.stderr)
    sys.exit(1)


def ready_client(path, timeout=60):
    c = nbd.Client(path, timeout=timeout)
    c.greet()
    c.go()
    return c


def timed_reads(c, n, length=65536):
    """n reads of length bytes; returns the latencies in seconds."""
    lat = []
    for i in range(n):
        t0 = time.monotonic()
        c.request(nbd.CMD_READ, (i * length) % (c.size - length), length, cookie=i + 1)
        cookie, err, chunks = c.read_reply(length)
        lat.append(time.monotonic() - t0)
        if err or cookie != i + 1 or len(chunks[0][2]) != length:
            die("read %d failed: err %d cookie %d" % (i, err, cookie))
    return lat


def report(what, lat):
    lat = sorted(lat)
    print("%s: %d reads of 64 KiB, median %.2f ms, max %.2f ms"
          % (what, len(lat), 1000 * lat[len(lat) // 2], 1000 * lat[-1]))
    return lat[-1]


def crowd(path, n):
    """n connected sockets that send nothing (connect errors are counted)."""
    socks, failed = [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Blocking: waits while the listen backlog is full (the test's
            # timeout bounds it), where a non-blocking connect fails.
            s.connect(path)
            s.settimeout(20)
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    return socks, failed


def fate(socks, wait):
    """For each socket: (greeted, seconds until the server closed it, or None)."""
    t0 = time.monotonic()
    state = {s: [False, None, b""] for s in socks}
    byfd = {s.fileno(): s for s in socks}
    p = select.poll()
    for s in socks:
        p.register(s, select.POLLIN)
    open_ = set(socks)
    while open_ and time.monotonic() - t0 < wait:
        for fd, _ in p.poll(500):
            s = byfd[fd]
            try:
                b = s.recv(4096)
            except OSError:
                b = b""
            st = state[s]
            if b:
                st[2] += b
                st[0] = len(st[2]) >= 18
            else:
                st[1] = time.monotonic() - t0
                open_.discard(s)
                p.unregister(s)
    return [(state[s][0], state[s][1]) for s in socks]


def mode_idle(path, n):
    first = ready_client(path)
    before = report("before the crowd", timed_reads(first, 50))
    socks, failed = crowd(path, n)
    print("idle connections: %d open, %d failed to connect" % (len(socks), failed))
    if failed:
        die("the server stopped accepting after %d connections" % len(socks))
    during = report("client connected before the crowd", timed_reads(first, 200))
    late = ready_client(path)
    after = report("client connected after the crowd", timed_reads(late, 200))
    worst = max(during, after)
    print("latency: before %.2f ms, worst with %d idle connections %.2f ms"
          % (1000 * before, len(socks), 1000 * worst))
    if worst > 5.0:
        die("a read took %.1f s with %d idle connections" % (worst, len(socks)))
    for s in socks:
        s.close()


def mode_limits(path, n, hs):
    first = ready_client(path)
    t0 = time.monotonic()
    socks, failed = crowd(path, n)
    spent = time.monotonic() - t0
    during = report("client during the crowd", timed_reads(first, 100))
    res = fate(socks, hs + 20)
    refused = sum(1 for g, t in res if not g and t is not None)
    greeted = [t for g, t in res if g]
    print("crowd of %d (connected in %.1f s, %d connects failed): %d closed without a"
          " greeting, %d greeted" % (n, spent, failed, refused, len(greeted)))
    if refused + failed < n // 2:
        die("the connection limit did not apply: only %d of %d refused" % (refused, n))
    never = [t for t in greeted if t is None]
    if never:
        die("%d connections that never negotiated were not dropped" % len(never))
    if greeted:
        print("handshake limit %d s: greeted idle connections dropped after %.1f..%.1f s"
              % (hs, min(greeted), max(greeted)))
    # The negotiated client idled through all that and is still served.
    report("client after the crowd was dropped", timed_reads(first, 20))
    late = ready_client(path)
    report("client connected afterwards", timed_reads(late, 20))
    if during > 5.0:
        die("a read took %.1f s during the crowd" % during)


def mode_stall(path, t, n):
    idle = ready_client(path)
    stalled = []
    sent = []  # when each stalled request started: its timeout runs from there
    for i in range(n):
        c = ready_client(path)
        # A 32 MiB write whose payload stops after 64 KiB (which fits in the
        # socket buffer: the server may not be reading it yet).
        c.request(nbd.CMD_WRITE, 0, 32 << 20, cookie=1, payload=b"\xa5" * (64 << 10))
        sent.append(time.monotonic())
        stalled.append(c)
    half = ready_client(path)
    half.send(struct.pack(">IHH", nbd.REQ_MAGIC, 0, nbd.CMD_READ))  # 8 of 28 bytes
    sent.append(time.monotonic())
    stalled.append(half)
    t0 = time.monotonic()
    res = fate([c.s for c in stalled], t + 20)
    if any(x is None for _, x in res):
        die("%d stalled requests were not dropped" % sum(x is None for _, x in res))
    # Measured from each request's start, not from the last one's: on a busy
    # machine the first requests start well before the last client connects.
    times = [t0 + x - s for (_, x), s in zip(res, sent)]
    print("request timeout %d s: %d stalled clients dropped after %.1f..%.1f s"
          % (t, len(times), min(times), max(times)))
    if min(times) < t - 1.0:
        die("a stalled client was dropped after %.1f s, before the timeout" % min(times))
    if time.monotonic() - t0 < t:
        die("the idle client was not given the time")
    report("idle client after the timeout", timed_reads(idle, 10))


def vm(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) // 1024
    return out


def mode_hogs(path, pid, n):
    base = vm(pid)
    print("server before the hogs: VmRSS %d MiB, VmHWM %d MiB" % (base["VmRSS"], base["VmHWM"]))
    hogs = []
    for i in range(n):
        c = ready_client(path)
        # 64 reads of 32 MiB, pipelined; the replies are never read.
        hdrs = b"".join(struct.pack(">IHHQQI", nbd.REQ_MAGIC, 0, nbd.CMD_READ, k + 1,
                                    (k % 2) << 25, 32 << 20) for k in range(64))
        c.send(hdrs)
        hogs.append(c)
    # Wait (bounded) until the server's memory stops growing.
    last, still, t0 = -1, 0, time.monotonic()
    while still < 10 and time.monotonic() - t0 < 60:
        rss = vm(pid)["VmRSS"]
        still = still + 1 if rss <= last else 0
        last = max(last, rss)
        time.sleep(0.2)
    good = ready_client(path)
    worst = report("well-behaved client beside %d hogs" % n, timed_reads(good, 50))
    m = vm(pid)
    print("server with %d hogs: VmRSS %d MiB, VmHWM %d MiB (growth %d MiB)"
          % (n, m["VmRSS"], m["VmHWM"], m["VmHWM"] - base["VmRSS"]))
    if worst > 5.0:
        die("the well-behaved client waited %.1f s" % worst)
    for c in hogs:
        c.close()
    print("HWM_GROWTH_MIB=%d" % (m["VmHWM"] - base["VmRSS"]))


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "idle":
        mode_idle(path, int(sys.argv[3]))
    elif mode == "limits":
        mode_limits(path, int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "stall":
        mode_stall(path, int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "hogs":
        mode_hogs(path, int(sys.argv[3]), int(sys.argv[4]))
    else:
        die("unknown mode " + mode)


if __name__ == "__main__":
    main()
