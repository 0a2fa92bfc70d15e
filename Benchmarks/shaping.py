"""A 100 Mbit link on loopback between a client and the delay proxy, and only there.

A plain `tc qdisc add dev lo root tbf` shapes every packet on lo. With the delay proxy in front of the
registry each byte crosses lo twice (registry -> proxy, proxy -> client), so a root tbf halves the
bandwidth the client sees (measured: 6.2 MB/s through the proxy at `rate 100mbit`, 12.5 MB/s direct).
Instead, an htb root sends only packets to or from the proxy's port through `tbf rate RATE burst
256kb latency 100ms`; everything else on lo (proxy -> registry, containerd's gRPC, other users) goes
through an unshaped class. (prio, netem and sfq are not available on these kernels; htb and u32 are.)

The qdisc carries a handle of our own, so only ours is ever removed; lo is shared, so when someone
else's qdisc is on it we wait for it to go rather than replace it or measure through it.
"""
import subprocess
import time

HANDLE = "5e57:"
UNSHAPED = "10gbit"


def root_qdisc():
    return subprocess.run(["tc", "qdisc", "show", "dev", "lo", "root"],
                          capture_output=True, text=True).stdout.strip()


def _tc(*args):
    subprocess.run(["tc", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class ShapedLink:
    """`with ShapedLink(port, "100mbit"):` shapes traffic to and from 127.0.0.1:port on lo."""

    def __init__(self, port, rate, log=print, wait_seconds=900):
        self.port = int(port)
        self.rate = rate
        self.log = log
        self.wait_seconds = wait_seconds
        self.active = False

    def install(self):
        deadline = time.monotonic() + self.wait_seconds
        while not root_qdisc().startswith("qdisc noqueue"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"lo is shaped by someone else: {root_qdisc()}")
            self.log(f"waiting for another qdisc on lo to go: {root_qdisc()}")
            time.sleep(10)
        self.active = True
        try:
            _tc("qdisc", "add", "dev", "lo", "root", "handle", HANDLE, "htb", "default", "20", "r2q", "1000")
            _tc("class", "add", "dev", "lo", "parent", HANDLE, "classid", HANDLE + "10", "htb", "rate", UNSHAPED)
            _tc("class", "add", "dev", "lo", "parent", HANDLE, "classid", HANDLE + "20", "htb", "rate", UNSHAPED)
            _tc("qdisc", "add", "dev", "lo", "parent", HANDLE + "10", "tbf",
                "rate", self.rate, "burst", "256kb", "latency", "100ms")
            for field in ("sport", "dport"):
                _tc("filter", "add", "dev", "lo", "parent", HANDLE, "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", field, str(self.port), "0xffff", "flowid", HANDLE + "10")
        except subprocess.CalledProcessError as error:
            self.remove()
            raise RuntimeError(f"tc failed: {error.stderr.decode().strip()}") from error
        self.log(f"shaping lo: tbf rate {self.rate} burst 256kb latency 100ms on port {self.port} only")

    def intact(self):
        """Whether our qdisc is still the one on lo (another user of the machine may replace it)."""
        return root_qdisc().startswith(f"qdisc htb {HANDLE}")

    def remove(self):
        if self.active:
            if self.intact():  # never remove a qdisc someone else put there meanwhile
                subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root", "handle", HANDLE])
            self.active = False
            self.log("shaping lo removed")

    def __enter__(self):
        self.install()
        return self

    def __exit__(self, *exc):
        self.remove()
