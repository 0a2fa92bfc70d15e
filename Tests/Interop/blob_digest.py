#!/usr/bin/env python3
"""Print {"diffID", "uncompressedSize", "compressedSize"} of a gzip blob
(multi-member) or a zstd:chunked blob (all frames, skippable ones skipped, by
the `zstd` CLI), for checking the JSON printed by `convert --json` /
`estargz-ref build`.

Usage: blob_digest.py BLOB
"""
import hashlib
import json
import os
import subprocess
import sys
import zlib


def main():
    path = sys.argv[1]
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"\x28\xb5\x2f\xfd":
        p = subprocess.Popen(["zstd", "-q", "-d", "-c", path], stdout=subprocess.PIPE)
        while True:
            b = p.stdout.read(1 << 20)
            if not b:
                break
            h.update(b); n += len(b)
        if p.wait() != 0:
            sys.exit("zstd -d failed on " + path)
        print(json.dumps({"diffID": "sha256:" + h.hexdigest(), "uncompressedSize": n,
                          "compressedSize": os.path.getsize(path)}))
        return 0
    with open(path, "rb") as f:
        d = zlib.decompressobj(wbits=31)
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            while b:
                out = d.decompress(b)
                h.update(out); n += len(out)
                if d.eof:
                    b = d.unused_data
                    d = zlib.decompressobj(wbits=31)
                else:
                    b = b""
        out = d.flush()
        h.update(out); n += len(out)
    print(json.dumps({"diffID": "sha256:" + h.hexdigest(), "uncompressedSize": n,
                      "compressedSize": os.path.getsize(path)}))


if __name__ == "__main__":
    sys.exit(main())
