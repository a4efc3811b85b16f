#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The library wall, checked (docs/architecture.md, "The library wall").

  exports: the dynamic symbols libvstor.so defines are exactly the functions
           and variables that the public headers (libstore/include/vstor/*.h)
           declare; prints the difference both ways and fails on any.
  headers: every public header compiles alone, with only the public include
           directory (no config.h, no internal header), as C with -Werror
           and, when a C++ compiler is given, as C++ with C linkage for every
           function it declares.

The declared names come from the headers themselves (preprocessed by the
project's compiler), so a new public header or function needs no change
here: only libstore/libvstor.map.

Usage: check-public-api.py exports --nm NM --lib LIB --include-dir DIR -- CC...
       check-public-api.py headers --include-dir DIR --std STD [--cxx CXX] -- CC...
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def preprocess(cc, include_dir, headers, lang="c", std=None):
    """The text of @headers as the compiler sees it, without system headers."""
    src = "".join("#include <vstor/%s>\n" % h for h in headers)
    cmd = list(cc) + ["-E", "-x", lang, "-I", include_dir]
    if std:
        cmd.append("-std=" + std)
    out = subprocess.run(cmd + ["-"], input=src, capture_output=True, text=True, check=True).stdout
    keep, lines = False, []
    root = os.path.realpath(include_dir)
    for line in out.splitlines():
        m = re.match(r'#\s*\d+\s+"([^"]*)"', line)
        if m:
            keep = os.path.realpath(m.group(1)).startswith(root + os.sep)
            continue
        if keep:
            lines.append(line)
    return "\n".join(lines)


def strip_attributes(text):
    """Remove __attribute__((...)) (nested parentheses)."""
    while True:
        i = text.find("__attribute__")
        if i < 0:
            return text
        j = text.index("(", i)
        depth = 0
        for k in range(j, len(text)):
            if text[k] == "(":
                depth += 1
            elif text[k] == ")":
                depth -= 1
                if depth == 0:
                    break
        text = text[:i] + " " + text[k + 1 :]


def top_level_declarations(text):
    """Split preprocessed text into file-scope declarations and definitions."""
    decls, cur, depth = [], [], 0
    for ch in text:
        cur.append(ch)
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                head = "".join(cur).split("{", 1)[0].strip()
                if head.endswith(")"):  # a function body (static inline)
                    decls.append("".join(cur))
                    cur = []
        elif ch == ";" and depth == 0:
            decls.append("".join(cur))
            cur = []
    return [d.strip() for d in decls if d.strip()]


def declared_names(text):
    """Functions and extern variables declared (not defined) at file scope."""
    names = set()
    for d in top_level_declarations(strip_attributes(text)):
        words = IDENT.findall(d)
        if not words or words[0] in ("typedef", "static"):
            continue
        head = d.split("{", 1)[0]
        if "(" in head:
            if "{" in d:
                continue  # a definition: not exported
            # The name is the identifier right before the first '(' that is
            # not a function pointer's "(*".
            m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", head)
            if m:
                names.add(m.group(1))
        elif "{" not in d and words[0] == "extern":
            m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*(\[[^]]*\]\s*)*;$", d)
            if m:
                names.add(m.group(1))
    return names


def public_headers(include_dir):
    return sorted(f for f in os.listdir(os.path.join(include_dir, "vstor")) if f.endswith(".h"))


def exported_names(nm, lib):
    out = subprocess.run([nm, "-D", "--defined-only", lib], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] == "A":  # A: a version node (VSTOR_0.1)
            continue
        names.add(parts[2].split("@", 1)[0])
    return names


def check_exports(args, cc):
    declared = declared_names(preprocess(cc, args.include_dir, public_headers(args.include_dir)))
    exported = exported_names(args.nm, args.lib)
    if not declared:
        print("no declarations found in %s/vstor" % args.include_dir)
        return 1
    missing = sorted(declared - exported)
    extra = sorted(exported - declared)
    for n in missing:
        print("declared in a public header, not exported (add to libvstor.map): %s" % n)
    for n in extra:
        print("exported, declared in no public header: %s" % n)
    print("%d declared, %d exported, %d missing, %d extra"
          % (len(declared), len(exported), len(missing), len(extra)))
    return 1 if missing or extra else 0


def compile_one(cmd, src, suffix, nm):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h" + suffix)
        obj = os.path.join(tmp, "h.o")
        with open(path, "w") as f:
            f.write(src)
        r = subprocess.run(cmd + ["-c", path, "-o", obj], capture_output=True, text=True)
        undefined = ""
        if r.returncode == 0:
            undefined = subprocess.run([nm, "-u", obj], capture_output=True,
                                       text=True).stdout
        return r.returncode, r.stdout + r.stderr, undefined


def check_headers(args, cc):
    failed = 0
    warn = ["-Wall", "-Wextra", "-Werror", "-I", args.include_dir]
    for h in public_headers(args.include_dir):
        line = "#include <vstor/%s>\n" % h
        rc, out, _ = compile_one(list(cc) + ["-std=" + args.std, "-Wstrict-prototypes"] + warn,
                                 line, ".c", args.nm)
        if rc:
            print("vstor/%s does not compile alone as C:\n%s" % (h, out))
            failed += 1
            continue
        if not args.cxx:
            continue
        # As C++: every function it declares must have C linkage, or a C++
        # embedder links against mangled names that do not exist.
        names = sorted(declared_names(preprocess(cc, args.include_dir, [h])))
        src = line + "void *vstor_api_refs[] = {\n%s};\n" % "".join(
            "\t(void *)&%s,\n" % n for n in names)
        rc, out, undefined = compile_one([args.cxx] + warn, src, ".cc", args.nm)
        if rc:
            print("vstor/%s does not compile alone as C++:\n%s" % (h, out))
            failed += 1
            continue
        mangled = [l.split()[-1] for l in undefined.splitlines() if l.split()[-1].startswith("_Z")]
        if mangled:
            print("vstor/%s: C++ linkage (no extern \"C\") for: %s" % (h, " ".join(mangled)))
            failed += 1
    print("%d public headers, %d failed" % (len(public_headers(args.include_dir)), failed))
    return 1 if failed else 0


def main():
    argv = sys.argv[1:]
    cc = []
    if "--" in argv:
        i = argv.index("--")
        argv, cc = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["exports", "headers"])
    p.add_argument("--include-dir", required=True)
    p.add_argument("--nm", default="nm")
    p.add_argument("--lib")
    p.add_argument("--std", default="gnu11")
    p.add_argument("--cxx")
    args = p.parse_args(argv)
    if not cc:
        p.error("the C compiler command goes after --")
    if args.mode == "exports":
        return check_exports(args, cc)
    return check_headers(args, cc)


if __name__ == "__main__":
    sys.exit(main())
