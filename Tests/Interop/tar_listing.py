#!/usr/bin/env python3
"""Print the expected `estargz-ref dump` listing of an eStargz blob built from TAR.

Usage: tar_listing.py TAR [--landmark no|prefetch|none] [--implicit-dirs]

Mirrors the reference (containerd/stargz-snapshotter estargz v0.12) rules:
  * names cleaned like cleanEntryName: path.Clean("/"+name) minus the leading "/";
  * "stargz.index.json" and existing landmark entries are dropped; a later
    entry with the same cleaned name replaces the earlier one (Build/importTar);
  * a landmark file (".no.prefetch.landmark" by default, ".prefetch.landmark"
    with --landmark prefetch) of one byte 0x0f, mode 0, uid/gid 0, no mtime;
  * the tree is built like Reader.initFields: implicit parent dirs are
    synthesized by getOrCreateDir (type dir, mode 0755, uid/gid 0, no mtime,
    numLink 2); numLink counts as the reference does (+1 per name, +1 for dirs,
    +1 per subdirectory, +1 per hardlink to a file); hardlinks report the
    target's data; only directories are descended into when listing;
  * modtime: unix seconds of mtime rounded half-up to the second (0 if the
    unrounded seconds are 0); xattrs: SCHILY.xattr.* PAX records, base64
    (records with empty values are kept, as the reference keeps them).
Output: JSON lines sorted by name, same keys as `estargz-ref dump`.
--implicit-dirs prints just the names of synthesized directories, one a line.
"""
import argparse
import base64
import decimal
import hashlib
import json
import posixpath
import sys
import tarfile

TOC_TAR_NAME = "stargz.index.json"
PREFETCH_LANDMARK = ".prefetch.landmark"
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
XATTR_PREFIX = "SCHILY.xattr."


def clean(name):
    p = posixpath.normpath("/" + name)
    return p.lstrip("/")


def parent_dir(p):
    return p.rpartition("/")[0]


def base(p):
    return p.rpartition("/")[2] if p else "."


def mtime_seconds(ti):
    raw = ti.pax_headers.get("mtime")
    t = decimal.Decimal(raw) if raw is not None else decimal.Decimal(int(ti.mtime))
    # Go: time.Unix(sec, nsec) with nsec truncated to 9 digits.
    t = t.quantize(decimal.Decimal("1e-9"), rounding=decimal.ROUND_FLOOR)
    if int(t.to_integral_value(rounding=decimal.ROUND_FLOOR)) == 0:
        return 0
    return int(t.to_integral_value(rounding=decimal.ROUND_HALF_UP))


TYPES = {
    tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg", tarfile.CONTTYPE: "reg",
    tarfile.LNKTYPE: "hardlink", tarfile.SYMTYPE: "symlink", tarfile.DIRTYPE: "dir",
    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}


class Ent:
    def __init__(self, name, type_, mode=0, uid=0, gid=0, size=0, modtime=0,
                 link="", major=0, minor=0, xattrs=None, sha=None, numlink=0):
        self.name, self.type, self.mode, self.uid, self.gid = name, type_, mode, uid, gid
        self.size, self.modtime, self.link = size, modtime, link
        self.major, self.minor = major, minor
        self.xattrs = xattrs or {}
        self.sha = sha
        self.numlink = numlink
        self.children = {}


def read_entries(path):
    order = []  # cleaned names in stream order (dedup: later replaces earlier)
    ents = {}
    with tarfile.open(path, "r:*", encoding="utf-8") as tf:
        for ti in tf:
            name = clean(ti.name)
            if name in (TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK):
                continue
            t = TYPES.get(ti.type)
            if t is None:
                raise SystemExit("unsupported tar entry type %r for %r" % (ti.type, ti.name))
            xattrs = {}
            for k, v in ti.pax_headers.items():
                if k.startswith(XATTR_PREFIX):
                    xattrs[k[len(XATTR_PREFIX):]] = base64.b64encode(
                        v.encode("utf-8", "surrogateescape")).decode()
            e = Ent(name, t, mode=ti.mode, uid=ti.uid, gid=ti.gid,
                    modtime=mtime_seconds(ti), xattrs=xattrs)
            if t in ("symlink", "hardlink"):
                e.link = ti.linkname
            if t in ("char", "block"):
                e.major, e.minor = ti.devmajor, ti.devminor
            if t == "reg":
                e.size = ti.size
                h = hashlib.sha256()
                f = tf.extractfile(ti)
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                e.sha = h.hexdigest()
            if name in ents:
                order.remove(name)
            ents[name] = e
            order.append(name)
    return [ents[n] for n in order]


def build_tree(entries, landmark):
    if landmark != "none":
        lm = PREFETCH_LANDMARK if landmark == "prefetch" else NO_PREFETCH_LANDMARK
        entries = [Ent(lm, "reg", size=1, sha=hashlib.sha256(b"\x0f").hexdigest())] + entries
    m = {}
    implicit = []
    for e in entries:
        if e.type == "dir":
            e.numlink += 1
        m[e.name] = e

    def add_child(pdir, name, child):
        if child.type == "dir":
            pdir.numlink += 1
        pdir.children[name] = child

    def get_or_create_dir(d):
        e = m.get(d)
        if e is None:
            e = Ent(d, "dir", mode=0o755, numlink=2)
            m[d] = e
            if d != "":
                implicit.append(d)
                add_child(get_or_create_dir(parent_dir(d)), base(d), e)
        return e

    def get_source(e):
        if e.type == "hardlink":
            org = m.get(clean(e.link))
            if org is None:
                raise SystemExit("%r is a hardlink but the linkname %r isn't found" % (e.name, e.link))
            return get_source(org)
        return e

    for e in entries:
        name = e.name
        pd = parent_dir(name)
        if name == pd:
            continue
        pdir = get_or_create_dir(pd)
        e.numlink += 1
        if e.type == "hardlink":
            org = get_source(e)
            org.numlink += 1
            e = org
        add_child(pdir, base(name), e)
    return m.get(""), implicit


def listing(root):
    out = []

    def walk(p, e):
        for b in sorted(e.children):
            c = e.children[b]
            cp = b if p == "" else p + "/" + b
            d = {
                "name": cp, "type": c.type, "size": c.size, "mode": c.mode,
                "uid": c.uid, "gid": c.gid, "modtime": c.modtime, "linkName": c.link,
                "devMajor": c.major, "devMinor": c.minor,
                "xattrs": dict(sorted(c.xattrs.items())), "numLink": c.numlink,
            }
            if c.type == "reg":
                d["sha256"] = c.sha
            out.append(d)
            if c.type == "dir":
                walk(cp, c)

    if root is not None:
        walk("", root)
    out.sort(key=lambda d: d["name"].encode("utf-8", "surrogateescape"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tar")
    ap.add_argument("--landmark", choices=("no", "prefetch", "none"), default="no")
    ap.add_argument("--implicit-dirs", action="store_true")
    a = ap.parse_args()
    root, implicit = build_tree(read_entries(a.tar), a.landmark)
    if a.implicit_dirs:
        for d in sorted(implicit):
            print(d)
        return 0
    for d in listing(root):
        print(json.dumps(d, ensure_ascii=False, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
