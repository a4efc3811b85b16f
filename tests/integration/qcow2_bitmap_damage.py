#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Damage the first persistent bitmap of a qcow2 image, for tests.

    qcow2_bitmap_damage.py IMAGE in-use       set its in_use flag (a writer that crashed)
    qcow2_bitmap_damage.py IMAGE bad-table    set a reserved bit in its first table entry

The image must have the bitmaps extension in its first 64 KiB.
"""
import struct
import sys

BITMAPS_EXT = 0x23852875


def directory_offset(f):
    head = f.read(65536)
    pos = struct.unpack('>I', head[100:104])[0]  # header_length
    while pos + 8 <= len(head):
        kind, length = struct.unpack('>II', head[pos:pos + 8])
        if kind == BITMAPS_EXT:
            return struct.unpack('>Q', head[pos + 24:pos + 32])[0]
        if kind == 0:
            break
        pos += 8 + ((length + 7) & ~7)
    sys.exit('no bitmaps extension')


def main():
    image, what = sys.argv[1], sys.argv[2]
    with open(image, 'r+b') as f:
        entry = directory_offset(f)
        if what == 'in-use':
            f.seek(entry + 12)
            flags = struct.unpack('>I', f.read(4))[0]
            f.seek(entry + 12)
            f.write(struct.pack('>I', flags | 1))
        elif what == 'bad-table':
            f.seek(entry)
            table = struct.unpack('>Q', f.read(8))[0]
            f.seek(table)
            f.write(struct.pack('>Q', 0x100))
        else:
            sys.exit('unknown damage: ' + what)


if __name__ == '__main__':
    main()
