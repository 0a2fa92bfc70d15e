#!/usr/bin/env python3
"""Prints "SHA256  PATH" for every regular file below ROOT (sorted, paths relative to ROOT). Each
file's cached pages are dropped before it is read (POSIX_FADV_DONTNEED), so every byte is asked of
the file system, not the page cache (python3-minimal has no mmap for an O_DIRECT buffer). Skips
proc, sys, dev, run, tmp and host (a container's own mounts). Usage: read_tree.py ROOT"""
import hashlib, os, stat, sys

root = sys.argv[1].rstrip("/") or "/"
skip = {"proc", "sys", "dev", "run", "tmp", "host"}
lines = []
for directory, dirs, files in os.walk(root):
    if directory == root:
        dirs[:] = [d for d in dirs if d not in skip]
    dirs.sort()
    for name in sorted(files):
        path = os.path.join(directory, name)
        if not stat.S_ISREG(os.lstat(path).st_mode):
            continue
        h = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            while True:
                block = os.read(fd, 1 << 20)
                if not block:
                    break
                h.update(block)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        lines.append(f"{h.hexdigest()}  {os.path.relpath(path, root)}")
sys.stdout.write("\n".join(lines) + "\n")
