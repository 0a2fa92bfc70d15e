"""The benchmarks' python rootfs tar: scripts/python-rootfs.sh's (debootstrap --variant=minbase
--include=python3-minimal bookworm, made once and cached; $ESTARGZ_PYTHON_ROOTFS_TAR wins)."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_rootfs_tar(given=None):
    """`given` when set, else the script's tar (its progress goes to stderr)."""
    if given:
        return given
    return subprocess.run([os.path.join(ROOT, "scripts", "python-rootfs.sh")], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
