"""Blob storage on another host, for redirect tests (stdlib only): what a registry's 307 points at.

usage: blob_server.py LISTEN_PORT REGISTRY_STORAGE LOG

GET /blobs/sha256:HEX serves the blob from docker-registry's filesystem storage
(REGISTRY_STORAGE/docker/registry/v2/blobs/sha256/HE/HEX/data), honouring a single
"Range: bytes=A-B" (206 with Content-Range). It needs no Authorization and logs one line per
request: "PATH RANGE AUTHORIZATION" ("-" for an absent header).
"""
import http.server, os, re, sys, threading

port, storage, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()


class Blobs(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with lock:
            with open(log_path, "a") as f:
                f.write(f"{self.path} {self.headers.get('Range', '-')} {self.headers.get('Authorization', '-').replace(' ', '_')}\n")
        match = re.match(r"^/blobs/sha256:([0-9a-f]{64})(\?.*)?$", self.path)
        path = match and os.path.join(storage, "docker/registry/v2/blobs/sha256", match.group(1)[:2], match.group(1), "data")
        if not path or not os.path.exists(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(path, "rb").read()
        wanted = re.match(r"^bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if wanted:
            start = int(wanted.group(1))
            end = min(len(data) - 1, int(wanted.group(2))) if wanted.group(2) else len(data) - 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            data = data[start : end + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Blobs)
server.daemon_threads = True
server.serve_forever()
