#!/usr/bin/env python3
"""Write a hostile layer tar for the extraction-safety tests.

Usage: gen_hostile.py OUT.tar KIND ESCAPE_DIR TMP_NAME
KIND:
  benign       only "ok.txt"
  dotdot       "../evil", "a/../../evil2", "/abs-evil" file entries
  abs-symlink  "link" -> ESCAPE_DIR (absolute), then "link/x"
  tmp-symlink  "link" -> "/tmp", then "link/TMP_NAME"
  rel-symlink  "rel" -> "../../..", then "rel/y"
  hardlink-escape  hardlink "hl" -> "../../../../escape/victim.txt" (outside DIR
               when DIR is ROOT/x-LABEL/a/b/out); a later duplicate "hl" would
               replace it (the reference dedupes names), so there is none
Every archive also has a harmless "ok.txt".
"""
import io
import sys
import tarfile


def main():
    out, kind, escape, tmp_name = sys.argv[1:5]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        def f(name, data=b"evil\n"):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1700000000
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))

        def sym(name, target):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            ti.mtime = 1700000000
            ti.mode = 0o777
            tf.addfile(ti)

        f("ok.txt", b"ok\n")
        if kind == "benign":
            pass
        elif kind == "dotdot":
            f("../evil")
            f("a/../../evil2")
            f("/abs-evil")
        elif kind == "abs-symlink":
            sym("link", escape)
            f("link/x")
        elif kind == "tmp-symlink":
            sym("link", "/tmp")
            f("link/" + tmp_name)
        elif kind == "rel-symlink":
            sym("rel", "../../..")
            f("rel/y")
        elif kind == "hardlink-escape":
            ti = tarfile.TarInfo("hl")
            ti.type = tarfile.LNKTYPE
            ti.linkname = "../../../../escape/victim.txt"
            ti.mtime = 1700000000
            ti.mode = 0o644
            ti.mode = 0o666  # a chmod through the link would show on the victim
            tf.addfile(ti)
        else:
            raise SystemExit("unknown kind " + kind)


if __name__ == "__main__":
    main()
