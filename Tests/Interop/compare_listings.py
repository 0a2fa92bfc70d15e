#!/usr/bin/env python3
"""Compare two JSON-lines listings (estargz-ref dump / tar_listing.py format).

Usage: compare_listings.py EXPECTED ACTUAL [--names-only]
Entries are matched by "name"; every differing field is printed. Exit 1 on any
difference.  --names-only compares only the set of names (and "type").
"""
import argparse
import json
import sys


def load(path):
    out = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except ValueError as e:
                raise SystemExit("%s:%d: not JSON: %s: %r" % (path, i, e, line[:200]))
            n = d.get("name")
            if n in out:
                print("%s: duplicate name %r" % (path, n))
            out[n] = d
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("expected")
    ap.add_argument("actual")
    ap.add_argument("--names-only", action="store_true")
    a = ap.parse_args()
    exp, act = load(a.expected), load(a.actual)
    bad = 0
    for n in sorted(set(exp) - set(act)):
        print("missing in %s: %r" % (a.actual, n)); bad += 1
    for n in sorted(set(act) - set(exp)):
        print("unexpected in %s: %r" % (a.actual, n)); bad += 1
    for n in sorted(set(exp) & set(act)):
        e, x = exp[n], act[n]
        keys = ("type",) if a.names_only else sorted(set(e) | set(x))
        for k in keys:
            if e.get(k) != x.get(k):
                print("%r: %s: expected %r, got %r" % (n, k, e.get(k), x.get(k))); bad += 1
    if bad:
        print("%d difference(s)" % bad)
        return 1
    print("listings match (%d entries)" % len(exp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
