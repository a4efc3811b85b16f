#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small QMP client for the tests (standard library only): connect to a
unix socket, read the greeting, negotiate, run commands, collect events.
Every read is bounded by a timeout, so a server that hangs fails the test
instead of stalling it."""
import json
import socket


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=30, negotiate=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.greeting = self.read()
        if negotiate:
            self.cmd("qmp_capabilities")

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def readline(self):
        """One message line, or None at EOF."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def read(self):
        line = self.readline()
        if line is None:
            raise QMPError("connection closed")
        return json.loads(line)

    def reply(self):
        """The next reply (return or error); events before it are kept."""
        while True:
            msg = self.read()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def execute(self, name, args=None, id=None):
        """The whole reply message of command NAME."""
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        if id is not None:
            msg["id"] = id
        self.send_raw(json.dumps(msg).encode() + b"\n")
        return self.reply()

    def cmd(self, name, **args):
        """The return value of command NAME; QMPError on an error reply."""
        r = self.execute(name, {k.replace("_", "-"): v for k, v in args.items()})
        if "error" in r:
            raise QMPError("%s: %s: %s" % (name, r["error"]["class"], r["error"]["desc"]))
        return r["return"]

    def event(self, name):
        """Wait for event NAME (bounded by the socket timeout)."""
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            msg = self.read()
            if "event" in msg:
                self.events.append(msg)


# ---- qemu-storage-daemon as the oracle: helpers of the tests that run the
# same commands against qsd and vstord and compare what comes back ----

def wait_job(c, job, status, timeout=30):
    """Poll query-jobs until job JOB has STATUS (None: until it is gone)."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        js = [j for j in c.cmd("query-jobs") if j["id"] == job]
        if (status is None and not js) or (js and js[0]["status"] == status):
            return
        time.sleep(0.02)
    raise QMPError("job %s never %s" % (job, status))


def stable(v, drop=("offset", "current-progress", "busy")):
    """A reply without the fields that timing decides (progress, busy)."""
    if isinstance(v, dict):
        return {k: stable(x, drop) for k, x in v.items() if k not in drop}
    if isinstance(v, list):
        return [stable(x, drop) for x in v]
    return v


def differences(q, v, qe=None, ve=None):
    """Print where vstord's replies (and events) differ from qsd's, to
    stderr; return how many differences there are."""
    import sys
    bad = 0
    for a, b in zip(q, v):
        if a != b:
            print("qsd:   ", a, "\nvstord:", b, file=sys.stderr)
            bad += 1
    if len(q) != len(v):
        print("different number of replies", file=sys.stderr)
        bad += 1
    if qe != ve:
        print("events differ:\nqsd:   ", qe, "\nvstord:", ve, file=sys.stderr)
        bad += 1
    return bad
