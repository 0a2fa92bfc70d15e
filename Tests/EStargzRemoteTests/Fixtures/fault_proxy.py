"""HTTP/1.1 fault-injection proxy for FaultProxyTests (stdlib only).

usage: fault_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT STATE_DIR

Before each request it reads STATE_DIR/mode ("MODE N": fault the first N requests, counting
from when the mode file last changed; N = -1 means every request) and appends one line
"METHOD PATH RANGE ACTION TIME" to STATE_DIR/log (TIME: seconds since the epoch, when the
request arrived). Modes: pass, drop (close before answering), stall (never answer), 500, 503,
429 (optionally with a Retry-After header: "429:2" for 2 seconds, "503:date+2" for an HTTP-date
2 seconds ahead), truncate (half the body, then close), flip (one byte of a 206 body inverted,
only for ranges starting at 0), slow (the body in 16 KiB pieces, 100 ms apart),
redirect=HOST:PORT (a blob GET the registry answers is answered instead with
307 to http://HOST:PORT/blobs/DIGEST?sig=test, as a registry with blob storage elsewhere does).
"""
import email.utils, http.client, http.server, os, sys, threading, time

port, upstream, state = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
current = {"stamp": None, "mode": "pass", "left": 0}


def decide():
    with lock:
        try:
            stat = os.stat(os.path.join(state, "mode"))
            stamp = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
            if stamp != current["stamp"]:
                mode, n = open(os.path.join(state, "mode")).read().split()
                current.update(stamp=stamp, mode=mode, left=int(n))
        except (FileNotFoundError, ValueError):
            pass
        if current["mode"] == "pass" or current["left"] == 0:
            return "pass"
        if current["left"] > 0:
            current["left"] -= 1
        return current["mode"]


def log(line):
    with lock:
        with open(os.path.join(state, "log"), "a") as f:
            f.write(line + "\n")


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        arrived = time.time()
        action = decide()
        if action == "flip" and not self.headers.get("Range", "").startswith("bytes=0-"):
            action = "pass"  # flip corrupts the blob's first range only (file data), never the footer/TOC tail
        if action.startswith("redirect=") and not (self.command == "GET" and "/blobs/sha256:" in self.path):
            action = "pass"  # only blob reads go to blob storage
        log(f"{self.command} {self.path} {self.headers.get('Range', '-')} {action} {arrived:.3f}")
        if action == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if action == "stall":
            time.sleep(3600)
            return
        status, _, retry_after = action.partition(":")
        if status in ("500", "503", "429"):
            payload = b"injected fault"
            self.send_response(int(status))
            if retry_after.startswith("date+"):
                when = time.time() + float(retry_after[5:])
                self.send_header("Retry-After", email.utils.formatdate(when, usegmt=True))
            elif retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn = http.client.HTTPConnection(upstream, timeout=30)
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read() if self.command != "HEAD" else b""
        conn.close()
        if action.startswith("redirect=") and response.status in (200, 206):
            # The registry authorized the read; the bytes come from "blob storage" on another host.
            digest = self.path.split("/blobs/", 1)[1]
            self.send_response(307)
            self.send_header("Location", f"http://{action[9:]}/blobs/{digest}?sig=test")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if action == "flip" and response.status == 206 and data:
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", response.getheader("Content-Length", "0"))
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if action == "truncate" and self.command != "HEAD":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if action == "slow":
            for start in range(0, len(data), 16384):
                self.wfile.write(data[start : start + 16384])
                self.wfile.flush()
                time.sleep(0.1)
            return
        self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Proxy)
server.daemon_threads = True
server.serve_forever()
