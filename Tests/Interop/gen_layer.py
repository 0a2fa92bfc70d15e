#!/usr/bin/env python3
"""Generate a deterministic container-layer tar exercising many tar features.

Usage: gen_layer.py OUT.tar [--seed N] [--chunk-size N] [--small-files N] [--gnu]

PAX format by default (xattrs, nanosecond mtimes, long names, big uid/gid as PAX
records).  --gnu writes GNU format instead (long names via ././@LongLink, big
uid/gid as base-256; xattrs and sub-second mtimes cannot be represented and are
omitted).  python3 stdlib only.
"""
import argparse
import io
import random
import struct
import sys
import tarfile

BASE_MTIME = 1700000000


def vfs_cap_data_v2(permitted, inheritable, effective=True):
    """struct vfs_cap_data, revision 2 (20 bytes, little endian)."""
    VFS_CAP_REVISION_2 = 0x02000000
    VFS_CAP_FLAGS_EFFECTIVE = 0x000001
    magic = VFS_CAP_REVISION_2 | (VFS_CAP_FLAGS_EFFECTIVE if effective else 0)
    return struct.pack("<IIIII", magic,
                       permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
                       permitted >> 32, inheritable >> 32)


class Gen:
    def __init__(self, out, seed, chunk_size, small_files, gnu):
        self.rng = random.Random(seed)
        self.chunk = chunk_size
        self.small = small_files
        self.gnu = gnu
        fmt = tarfile.GNU_FORMAT if gnu else tarfile.PAX_FORMAT
        self.tar = tarfile.open(out, "w", format=fmt, encoding="utf-8")
        self.n = 0

    def info(self, name, type_, mode, uid=0, gid=0, uname="", gname="",
             mtime_ns=None, xattrs=None):
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname, ti.gname = uname, gname
        self.n += 1
        if mtime_ns is None:
            mtime_ns = (BASE_MTIME + self.n * 37) * 10**9
        sec, ns = divmod(mtime_ns, 10**9)
        ti.mtime = sec
        pax = {}
        if not self.gnu:
            if ns:
                pax["mtime"] = "%d.%09d" % (sec, ns)
            for k, v in (xattrs or {}).items():
                if isinstance(v, str):
                    v = v.encode("utf-8")
                # tarfile writes str PAX values; surrogateescape round-trips raw
                # bytes (it then adds hdrcharset=BINARY).
                pax["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
        ti.pax_headers = pax
        return ti

    def dir(self, name, mode=0o755, **kw):
        self.tar.addfile(self.info(name, tarfile.DIRTYPE, mode, **kw))

    def file(self, name, data, mode=0o644, **kw):
        ti = self.info(name, tarfile.REGTYPE, mode, **kw)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def symlink(self, name, target, **kw):
        ti = self.info(name, tarfile.SYMTYPE, 0o777, **kw)
        ti.linkname = target
        self.tar.addfile(ti)

    def hardlink(self, name, target, **kw):
        ti = self.info(name, tarfile.LNKTYPE, 0o644, **kw)
        ti.linkname = target
        self.tar.addfile(ti)

    def dev(self, name, type_, major, minor, mode=0o600, **kw):
        ti = self.info(name, type_, mode, **kw)
        ti.devmajor, ti.devminor = major, minor
        self.tar.addfile(ti)

    def rand(self, n):
        return self.rng.randbytes(n)

    def mixed(self, n):
        """Alternating compressible text and random blocks."""
        out = bytearray()
        i = 0
        while len(out) < n:
            if i % 2 == 0:
                line = ("line %08d of compressible text; the quick brown fox\n" % i).encode()
                out += line * (self.rng.randrange(200, 3000) // len(line) + 1)
            else:
                out += self.rand(self.rng.randrange(1000, 70000))
            i += 1
        return bytes(out[:n])

    def generate(self):
        c = self.chunk
        # Nested dirs with assorted modes and owners.
        self.dir("etc")
        self.dir("etc/conf.d", mode=0o750, uid=1000, gid=1000, uname="alice", gname="staff")
        self.dir("usr")
        self.dir("usr/lib")
        self.dir("usr/lib/deep")
        self.dir("usr/lib/deep/er")
        self.dir("usr/lib/deep/er/est", mode=0o700)
        self.file("usr/lib/deep/er/est/leaf.txt", b"leaf\n")
        self.dir("tmp", mode=0o1777)
        self.dir("data")
        self.file("etc/hostname", b"interop\n")
        self.file("etc/conf.d/app.conf", b"key=value\n" * 10, mode=0o640,
                  uid=1000, gid=1000, uname="alice", gname="staff")
        # Regular files of boundary sizes.
        for size in (0, 1, 511, 512, 513):
            self.file("data/size_%d" % size, self.rand(size))
        self.file("data/exact_chunk", self.rand(c))
        self.file("data/chunk_plus_one", self.rand(c + 1))
        self.file("data/multi_chunk", self.mixed(3 * c + 12345))
        self.file("data/compressible", b"A" * (2 * c + 7))
        # Implicit parent dirs (no entries for implicit/, implicit/a, implicit/a/b).
        self.file("implicit/a/b/file.txt", b"implicit parents\n")
        self.file("implicit/a/other.txt", b"other\n")
        # Many small files.
        self.dir("many")
        for i in range(self.small):
            self.file("many/f%05d" % i, self.rand(self.rng.randrange(0, 2000)))
        # Long names: component of 200 chars (under NAME_MAX), paths > 100 and > 255.
        long1 = "long_" + "n" * 120
        self.dir(long1)
        self.file(long1 + "/file_with_path_over_100", b"over 100\n")
        comp = "c" * 200
        self.dir(long1 + "/" + comp)
        longpath = long1 + "/" + comp + "/" + "x" * 100 + ".txt"
        assert len(longpath) > 255
        self.file(longpath, b"over 255\n")
        # Symlinks: relative, absolute, dangling, long target.
        self.dir("links")
        self.symlink("links/rel", "../etc/hostname")
        self.symlink("links/abs", "/etc/hostname")
        self.symlink("links/dangling", "does/not/exist")
        self.symlink("links/dirlink", "../usr/lib")
        self.symlink("links/longtarget", "t" * 150 + "/" + "u" * 150)
        self.symlink("links/owned", "rel", uid=1000, gid=1000)
        # Hardlinks: same dir, other dir, chain, long link name.
        self.file("data/hl_target", b"hardlinked content\n" * 100, mode=0o640, uid=7, gid=8)
        self.hardlink("data/hl_same_dir", "data/hl_target")
        self.hardlink("links/hl_other_dir", "data/hl_target")
        self.hardlink("links/hl_chain", "links/hl_other_dir")
        self.hardlink("links/hl_multichunk", "data/multi_chunk")
        self.hardlink("links/hl_longname", longpath)
        # Devices and fifos.
        self.dir("dev")
        self.dev("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666)
        self.dev("dev/ttyX", tarfile.CHRTYPE, 136, 300, mode=0o620, gid=5)
        self.dev("dev/loop0", tarfile.BLKTYPE, 7, 0, mode=0o660, gid=6)
        self.dev("dev/fifo", tarfile.FIFOTYPE, 0, 0, mode=0o644)
        # Big uid/gid (beyond 2^21 = octal-field limit of 7 digits), names.
        self.dir("owners")
        self.file("owners/big_ids", b"big ids\n", uid=3000000, gid=4000000,
                  uname="biguser", gname="biggroup")
        self.file("owners/max_ids", b"max\n", uid=2**31 - 2, gid=2**31 - 3)
        self.file("owners/names_only", b"n\n", uid=1234, gid=5678, uname="bob", gname="wheel")
        # Nanosecond mtimes (incl. rounding boundaries).
        self.dir("times")
        for label, ns in (("ns_low", 123456789), ("ns_high", 987654321),
                          ("ns_half", 500000000), ("ns_below_half", 499999999),
                          ("ns_zero", 0), ("ns_one", 1)):
            self.file("times/" + label, label.encode(), mtime_ns=(BASE_MTIME + 5000) * 10**9 + ns)
        self.dir("times/dir_ns", mtime_ns=(BASE_MTIME + 6000) * 10**9 + 750000000)
        # Special mode bits.
        self.dir("modes")
        self.file("modes/setuid", b"#!/bin/sh\n", mode=0o4755)
        self.file("modes/setgid", b"#!/bin/sh\n", mode=0o2755)
        self.file("modes/setuid_setgid", b"#!/bin/sh\n", mode=0o6750)
        self.file("modes/sticky_file", b"s\n", mode=0o1644)
        self.file("modes/none", b"none\n", mode=0o000)
        self.dir("modes/sticky_dir", mode=0o1777)
        self.dir("modes/setgid_dir", mode=0o2775)
        self.file("modes/exec", b"\x7fELF", mode=0o755)
        # Xattrs (PAX only).
        self.dir("xattr", xattrs={"user.dirattr": "on a dir"})
        cap = vfs_cap_data_v2(permitted=(1 << 10) | (1 << 13) | (1 << 40), inheritable=0)
        self.file("xattr/capability", b"\x7fELFcap", mode=0o755,
                  xattrs={"security.capability": cap})
        self.file("xattr/user_trusted", b"xattrs\n", xattrs={
            "user.mime_type": "text/plain",
            "user.binary": bytes(range(256)),
            "user.empty": b"",
            "trusted.overlay.opaque": "y",
            "trusted.bin": b"\x00\x01\xff\xfe",
        })
        # Names with spaces and unicode.
        self.dir("spaces and ünïcödé")
        self.file("spaces and ünïcödé/file with spaces.txt", b"spaces\n")
        self.file("spaces and ünïcödé/日本語ファイル", "こんにちは\n".encode())
        self.file("spaces and ünïcödé/emoji_🦀.bin", self.rand(100))
        self.symlink("spaces and ünïcödé/link→ünï", "file with spaces.txt")
        # "./"-prefixed names.
        self.dir("./dotslash")
        self.file("./dotslash/file", b"dot slash\n")
        self.file("./dotslash/nested/implicit_file", b"dot slash implicit parent\n")
        # Duplicate name: the later entry wins.
        self.dir("dup")
        self.file("dup/file", b"first version\n", mode=0o600)
        self.file("dup/keep", b"unrelated\n")
        self.file("dup/file", b"second version, the winner\n", mode=0o644, uid=42, gid=43)
        self.tar.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=4 << 20)
    ap.add_argument("--small-files", type=int, default=200)
    ap.add_argument("--gnu", action="store_true")
    a = ap.parse_args()
    Gen(a.out, a.seed, a.chunk_size, a.small_files, a.gnu).generate()


if __name__ == "__main__":
    sys.exit(main())
