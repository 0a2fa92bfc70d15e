#!/usr/bin/env python3
"""A stand-in `estargz` CLI built on estargz-ref + GNU tar, ONLY for checking
the interop test harness itself before the real CLI exists:

  ESTARGZ_BIN=$PWD/Tests/Interop/fake_estargz.py swift test --filter InteropTests

(estargz-ref is taken from $ESTARGZ_REF, else .build/interop/estargz-ref, which
the test suite builds.)

Implements the CLI forms the tests assume: convert/verify/extract/ls/cat.
Not a reference for anything; extraction delegates to GNU tar.
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile

REF = os.environ.get("ESTARGZ_REF") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", ".build", "interop", "estargz-ref")


def opts(args, names, flags=()):
    pos, o = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        if a in flags:
            o[a] = True
        elif a in names:
            i += 1
            o[a] = args[i]
        else:
            pos.append(a)
        i += 1
    return pos, o


def ref(*args, capture=True):
    return subprocess.run([REF, *args], capture_output=capture)


def passthrough(r):
    sys.stdout.buffer.write(r.stdout)
    sys.stderr.buffer.write(r.stderr)
    return r.returncode


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "convert":
        (i, o), op = opts(args, ("--level", "--chunk-size", "--prioritized-files"), ("--json",))
        a = ["build", i, o]
        for k, g in (("--level", "-level"), ("--chunk-size", "-chunk-size"), ("--prioritized-files", "-prioritized")):
            if k in op:
                a += [g, op[k]]
        return passthrough(ref(*a))
    if cmd == "verify":
        (b,), op = opts(args, ("--toc-digest",))
        a = ["dump", b] + (["-toc-digest", op["--toc-digest"]] if "--toc-digest" in op else [])
        r = ref(*a)
        sys.stderr.buffer.write(r.stderr)
        return r.returncode
    if cmd == "extract":
        (b, d), op = opts(args, ("--toc-digest",))
        a = ["dump", b] + (["-toc-digest", op["--toc-digest"]] if "--toc-digest" in op else [])
        r = ref(*a)
        if r.returncode:
            sys.stderr.buffer.write(r.stderr)
            return r.returncode
        with tempfile.TemporaryDirectory() as t:
            tar = os.path.join(t, "layer.tar")
            with open(b, "rb") as f, open(tar, "wb") as out:
                out.write(gzip.decompress(f.read()))
            return subprocess.run(["sh", "-c", 'umask 022 && exec tar "$@"', "tar", "-x",
                                   "--delay-directory-restore", "--numeric-owner", "--xattrs",
                                   "--xattrs-include=*", "-p", "--exclude=stargz.index.json",
                                   "-f", tar, "-C", d]).returncode
    if cmd == "ls":
        (b,), op = opts(args, (), ("--json",))
        r = ref("dump", b)
        if r.returncode:
            return passthrough(r)
        for line in r.stdout.decode().splitlines():
            e = json.loads(line)
            print(json.dumps({"name": e["name"], "type": e["type"]}, ensure_ascii=False))
        return 0
    if cmd == "cat":
        (b, p), _ = opts(args, ())
        return passthrough(ref("cat", b, p))
    print("fake estargz: unknown command " + cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
