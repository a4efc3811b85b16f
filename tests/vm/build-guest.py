#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Build the test guest from Debian packages, without installing them:

  build-guest.py CACHE_DIR

CACHE_DIR receives vmlinux (the uncompressed kernel, booted directly through
PVH, which saves the bzImage's decompression under TCG) and initrd.cpio (an
uncompressed newc archive: busybox-static as /init's shell, the virtio
modules in dependency order, a few host tools with their libraries, and the
guest scripts of tests/vm/guest/). Re-running with an unchanged input set is
a no-op. The kernel and busybox come from `apt-get download`."""
import glob
import hashlib
import lzma
import os
import stat
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ["virtio_blk", "virtio_pci", "virtio_net"]
HOST_TOOLS = ["/usr/sbin/blkdiscard"]


def run(*cmd, cwd=None):
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def kernel_package():
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise SystemExit("build-guest: cannot find the kernel package behind linux-image-amd64")


def fetch(cache, pkg):
    debs = glob.glob(os.path.join(cache, "debs", pkg + "_*.deb"))
    if debs:
        return debs[0]
    os.makedirs(os.path.join(cache, "debs"), exist_ok=True)
    # -o APT::Sandbox::User=root: the cache may live where _apt cannot write.
    run("apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg,
        cwd=os.path.join(cache, "debs"))
    debs = glob.glob(os.path.join(cache, "debs", pkg + "_*.deb"))
    if not debs:
        raise SystemExit("build-guest: apt-get download %s gave nothing" % pkg)
    return debs[0]


def extract_vmlinux(bzimage, out):
    data = open(bzimage, "rb").read()
    for magic, opener in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"),
                          (b"\x28\xb5\x2f\xfd", "zstd")):
        pos = data.find(magic)
        while pos >= 0:
            try:
                if opener == "xz":
                    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
                    raw = d.decompress(data[pos:])
                elif opener == "gzip":
                    import zlib
                    raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[pos:])
                else:
                    raw = subprocess.run(["zstd", "-dc"], input=data[pos:], capture_output=True).stdout
                if raw[:4] == b"\x7fELF":
                    open(out, "wb").write(raw)
                    return
            except Exception:
                pass
            pos = data.find(magic, pos + 1)
    raise SystemExit("build-guest: no ELF kernel inside " + bzimage)


def module_depends(ko):
    data = open(ko, "rb").read()
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    end = data.index(b"\0", i + 1)
    deps = data[i + 9:end].decode()
    return [d for d in deps.split(",") if d]


def newc(entries, out):
    """entries: list of (path, mode, data or None for dirs, target for symlinks)."""
    ino = 1
    with open(out, "wb") as f:
        def put(name, mode, body):
            nonlocal ino
            nm = name.encode() + b"\0"
            hdr = "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x" % (
                ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(nm), 0)
            ino += 1
            f.write(hdr.encode() + nm)
            f.write(b"\0" * ((4 - (110 + len(nm)) % 4) % 4))
            f.write(body)
            f.write(b"\0" * ((4 - len(body) % 4) % 4))
        for name, mode, body in entries:
            put(name, mode, body)
        put("TRAILER!!!", 0, b"")


def main():
    cache = os.path.abspath(sys.argv[1])
    os.makedirs(cache, exist_ok=True)
    kpkg = kernel_package()
    inputs = hashlib.sha256()
    inputs.update(kpkg.encode())
    for p in sorted(glob.glob(os.path.join(HERE, "guest", "*"))) + [__file__]:
        inputs.update(open(p, "rb").read())
    for t in HOST_TOOLS:
        if os.path.exists(t):
            inputs.update(t.encode() + str(os.stat(t).st_mtime).encode())
    stamp = os.path.join(cache, "stamp")
    digest = inputs.hexdigest()
    if (os.path.exists(stamp) and open(stamp).read() == digest and
            os.path.exists(os.path.join(cache, "vmlinux")) and
            os.path.exists(os.path.join(cache, "initrd.cpio"))):
        return

    kdeb = fetch(cache, kpkg)
    bdeb = fetch(cache, "busybox-static")
    work = os.path.join(cache, "work")
    run("rm", "-rf", work)  # extracted trees may hold read-only directories
    os.makedirs(work)
    run("dpkg-deb", "-x", kdeb, os.path.join(work, "k"))
    run("dpkg-deb", "-x", bdeb, os.path.join(work, "bb"))
    vmlinuz = glob.glob(os.path.join(work, "k", "boot", "vmlinuz-*"))[0]
    extract_vmlinux(vmlinuz, os.path.join(cache, "vmlinux"))

    # Modules in dependency order.
    kos = {}
    for ko in glob.glob(os.path.join(work, "k", "lib", "modules", "*", "**", "*.ko"), recursive=True):
        kos[os.path.basename(ko)[:-3].replace("-", "_")] = ko
    order = []

    def want(m):
        m = m.replace("-", "_")
        if m in order:
            return
        if m not in kos:
            return  # built in
        for d in module_depends(kos[m]):
            want(d)
        order.append(m)
    for m in MODULES:
        want(m)

    entries = []
    dirs = ["bin", "sbin", "dev", "proc", "sys", "tmp", "mnt", "lib", "lib64",
            "lib/x86_64-linux-gnu", "usr", "usr/bin", "usr/sbin", "modules", "tests", "run"]
    for d in dirs:
        entries.append((d, stat.S_IFDIR | 0o755, b""))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755,
                    open(os.path.join(work, "bb", "bin", "busybox"), "rb").read()))
    entries.append(("init", stat.S_IFREG | 0o755,
                    open(os.path.join(HERE, "guest", "init"), "rb").read()))
    for p in sorted(glob.glob(os.path.join(HERE, "guest", "*.sh"))):
        entries.append(("tests/" + os.path.basename(p), stat.S_IFREG | 0o755, open(p, "rb").read()))
    mods = ""
    for i, m in enumerate(order):
        entries.append(("modules/%02d-%s.ko" % (i, m), stat.S_IFREG | 0o644,
                        open(kos[m], "rb").read()))
        mods += m + "\n"
    # Host tools and the shared libraries they need.
    libs = set()
    for t in HOST_TOOLS:
        if not os.path.exists(t):
            continue
        entries.append((t.lstrip("/"), stat.S_IFREG | 0o755, open(t, "rb").read()))
        out = subprocess.run(["ldd", t], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/") and os.path.exists(path):
                libs.add(path)
    for lib in sorted(libs):
        real = os.path.realpath(lib)
        dest = lib.lstrip("/")
        if dest.startswith("lib64/"):
            entries.append((dest, stat.S_IFREG | 0o755, open(real, "rb").read()))
        else:
            entries.append(("lib/x86_64-linux-gnu/" + os.path.basename(lib), stat.S_IFREG | 0o755,
                            open(real, "rb").read()))
    newc(entries, os.path.join(cache, "initrd.cpio.tmp"))
    os.replace(os.path.join(cache, "initrd.cpio.tmp"), os.path.join(cache, "initrd.cpio"))
    run("rm", "-rf", work)
    open(stamp, "w").write(digest)


main()
