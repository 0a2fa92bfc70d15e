#!/usr/bin/env python3
"""Request timelines from Benchmarks/delay_proxy.py's --events file.

    timeline.py EVENTS [--from T0] [--to T1] [--mark NAME=T ...]

Prints one line per HTTP request the proxy saw in [T0, T1] (wall-clock seconds):
when the client sent it, when its first and last response bytes reached the
client (relative to T0, in ms), the bytes, the connection and the request
line with its Range header; then how busy the link was: the time with at
least one response in flight and the idle gaps longer than 30 ms. Marks
(e.g. pull=…) are printed in place, so the phases of a run can be read off.
hellobench.py --timeline writes one of these per cold start.
"""
import argparse
import json


def requests(events_path, t0, t1):
    """[(sent, first, last, bytes, conn, line, range)] for requests sent in [t0, t1]."""
    open_requests = {}   # conn -> list of request dicts (in order)
    out = []
    with open(events_path) as f:
        for raw in f:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            t, conn, kind = ev["t"], ev["c"], ev["e"]
            if kind == "req":
                r = {"sent": t, "first": None, "last": None, "bytes": 0, "conn": conn,
                     "line": ev.get("line", ""), "range": ev.get("range")}
                open_requests.setdefault(conn, []).append(r)
                out.append(r)
            elif kind == "down":
                queue = open_requests.get(conn)
                if not queue:
                    continue
                # HTTP/1.1 without pipelining: the bytes belong to the oldest request of the
                # connection that has not seen a newer request sent after it.
                r = queue[-1]
                if r["first"] is None:
                    r["first"] = t
                r["last"] = t
                r["bytes"] += ev["n"]
    return [r for r in out if t0 <= r["sent"] <= t1]


def render(events_path, t0, t1, marks=()):
    rs = requests(events_path, t0, t1)
    lines = []
    items = [(r["sent"], 0, r) for r in rs] + [(t, 1, name) for name, t in marks]
    items.sort(key=lambda x: (x[0], x[1]))
    ms = lambda t: "     -" if t is None else f"{(t - t0) * 1000:6.0f}"
    lines.append("  sent  first   last        bytes conn request")
    for t, kind, item in items:
        if kind == 1:
            lines.append(f"{ms(t)}  ---- {item} ----")
            continue
        r = item
        rng = f"  [{r['range']}]" if r["range"] else ""
        lines.append(f"{ms(r['sent'])} {ms(r['first'])} {ms(r['last'])} {r['bytes']:>12,} {r['conn']:>4} "
                     f"{r['line'][:90]}{rng}")
    # Link busy time: union of [sent, last] intervals of requests that got bytes.
    spans = sorted((r["sent"], r["last"]) for r in rs if r["last"] is not None)
    busy, gaps, cur = 0.0, [], None
    for a, b in spans:
        if cur is None:
            cur = [a, b]
        elif a > cur[1]:
            busy += cur[1] - cur[0]
            if a - cur[1] > 0.03:
                gaps.append((cur[1], a))
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    if cur:
        busy += cur[1] - cur[0]
    total = sum(r["bytes"] for r in rs)
    lines.append(f"{len(rs)} requests, {total:,} B; a request in flight {busy * 1000:.0f} ms of "
                 f"{(t1 - t0) * 1000:.0f} ms; idle gaps > 30 ms: "
                 + (", ".join(f"{ms(a).strip()}–{ms(b).strip()}" for a, b in gaps) or "none"))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("events")
    ap.add_argument("--from", dest="t0", type=float, default=0.0)
    ap.add_argument("--to", dest="t1", type=float, default=float("inf"))
    ap.add_argument("--mark", action="append", default=[], help="NAME=T (wall-clock seconds)")
    args = ap.parse_args()
    marks = [(m.split("=", 1)[0], float(m.split("=", 1)[1])) for m in args.mark]
    t0 = args.t0
    if t0 == 0.0:
        with open(args.events) as f:
            first = f.readline()
        t0 = json.loads(first)["t"] if first else 0.0
    print(render(args.events, t0, args.t1, marks))


if __name__ == "__main__":
    main()
