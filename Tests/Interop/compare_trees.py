#!/usr/bin/env python3
"""Compare two extracted directory trees (lstat based; nothing is followed).

Usage: compare_trees.py A B [--mtime-round] [--ignore-mtime REL]... [--root]

Compared for every path below the roots: file type, mode bits (incl.
setuid/setgid/sticky), uid, gid, mtime (nanoseconds exactly, or rounded
half-up to the second with --mtime-round, since the TOC stores seconds and Go
rounds with time.Round(time.Second)), size (non-directories), sha256 of
regular-file content, symlink target, device major/minor, all xattrs
(listxattr/getxattr with follow_symlinks=False), and hardlink groups (the
partition of non-directory paths by inode).  --ignore-mtime REL skips the
mtime of that relative path (e.g. implicitly created parent directories).
--ignore REL leaves a path out entirely.  --root also compares the roots' own metadata.  Prints every difference; exit
status 1 if there is any.
"""
import argparse
import hashlib
import os
import stat
import sys


def mtime_key(st, rnd):
    ns = st.st_mtime_ns
    if rnd:
        sec, rem = divmod(ns, 10**9)
        return sec + (1 if rem >= 5 * 10**8 else 0)
    return ns


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def xattrs(path):
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        return {"<listxattr error>": str(e)}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = "<getxattr error: %s>" % e
    return out


TYPE_NAMES = {stat.S_IFREG: "reg", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
              stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
              stat.S_IFSOCK: "socket"}


def scan(root, args):
    info = {}
    inodes = {}

    def visit(rel):
        p = os.path.join(root, rel) if rel else root
        st = os.lstat(p)
        t = stat.S_IFMT(st.st_mode)
        d = {
            "type": TYPE_NAMES.get(t, oct(t)),
            "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime": mtime_key(st, args.mtime_round),
            "xattrs": xattrs(p),
        }
        if t != stat.S_IFDIR:
            d["size"] = st.st_size
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        if t == stat.S_IFREG:
            d["sha256"] = sha256(p)
        elif t == stat.S_IFLNK:
            d["target"] = os.readlink(p)
        elif t in (stat.S_IFCHR, stat.S_IFBLK):
            d["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        info[rel] = d
        if t == stat.S_IFDIR:
            for name in sorted(os.listdir(p)):
                visit(os.path.join(rel, name) if rel else name)

    visit("")
    groups = {}
    for paths in inodes.values():
        if len(paths) > 1:
            g = tuple(sorted(paths))
            for q in g:
                groups[q] = g
    return info, groups


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--mtime-round", action="store_true")
    ap.add_argument("--ignore-mtime", action="append", default=[])
    ap.add_argument("--root", action="store_true")
    ap.add_argument("--ignore", action="append", default=[],
                    help="relative path to leave out entirely (e.g. a landmark file)")
    args = ap.parse_args()
    ia, ga = scan(args.a, args)
    ib, gb = scan(args.b, args)
    ignore = set(os.path.normpath(p) for p in args.ignore_mtime)
    for p in args.ignore:
        p = os.path.normpath(p)
        for info in (ia, ib):
            info.pop(p, None)
    diffs = []
    for rel in sorted(set(ia) - set(ib)):
        diffs.append("only in %s: %r" % (args.a, rel))
    for rel in sorted(set(ib) - set(ia)):
        diffs.append("only in %s: %r" % (args.b, rel))
    for rel in sorted(set(ia) & set(ib)):
        if rel == "" and not args.root:
            continue
        a, b = ia[rel], ib[rel]
        for k in sorted(set(a) | set(b)):
            if k == "mtime" and rel in ignore:
                continue
            if a.get(k) != b.get(k):
                diffs.append("%r: %s: %r != %r" % (rel or ".", k, a.get(k), b.get(k)))
        if ga.get(rel) != gb.get(rel):
            diffs.append("%r: hardlink group: %r != %r" % (rel, ga.get(rel), gb.get(rel)))
    for d in diffs:
        print(d)
    if diffs:
        print("%d difference(s) between %s and %s" % (len(diffs), args.a, args.b))
        return 1
    print("trees match (%d paths)" % len(ia))
    return 0


if __name__ == "__main__":
    sys.exit(main())
