#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Squeeze a vhdx image qemu-img made into a small fuzz seed.

qemu-img places the BAT and the metadata region at 1 MiB boundaries, so
even an empty image is megabytes long. The seed keeps the file identifier,
both headers and both region tables, and moves the BAT (its first 4 KiB)
and the metadata region (table and items) right after them, rewriting the
region tables and their CRC-32C. Payload blocks the BAT names then lie past
the end of the file (a truncated image, which must read as zeroes).

usage: make-vhdx-seed.py IN OUT
"""
import struct
import sys

BAT = bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")
META = bytes.fromhex("06a27c8b90479a4bb8fe575f050f886e")


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def main():
    src = open(sys.argv[1], "rb").read()
    out = bytearray(src[: 320 * 1024])
    table = bytearray(src[192 * 1024 : 256 * 1024])
    count = struct.unpack_from("<I", table, 8)[0]
    moved = {}
    for k in range(count):
        e = 16 + 32 * k
        guid = bytes(table[e : e + 16])
        off, length = struct.unpack_from("<QI", table, e + 16)
        if guid == BAT:
            keep = 4096
        elif guid == META:
            keep = 72 * 1024
        else:
            continue
        moved[guid] = (len(out), keep)
        out += src[off : off + keep]
        struct.pack_into("<QI", table, e + 16, moved[guid][0], keep)
    table[4:8] = b"\0\0\0\0"
    table[4:8] = struct.pack("<I", crc32c(bytes(table)))
    out[192 * 1024 : 256 * 1024] = table
    out[256 * 1024 : 320 * 1024] = table
    open(sys.argv[2], "wb").write(out)


main()
