#!/usr/bin/env python3
"""Checks the Lambda artifacts deploy/artifacts.sh built.

    python3 deploy/check_artifacts.py [--glibc 2.34] [--dir target/artifacts] ARCH...

For each architecture (x86_64, arm64), in <dir>/<arch>/:
  switchyard-router.zip           exactly `bootstrap`, an executable (mode 755)
  switchyard-extension-layer.zip  `extensions/switchyard-extension` and
                                  `switchyard-wrapper`, both executable; nothing
                                  else outside `extensions/`
and for every ELF in them: its machine is the architecture's (readelf -h),
and the newest GLIBC_ version it needs (readelf -V) is at most --glibc.
Prints one line per zip (size, unpacked size, needed glibc) and exits 1 on
the first failed check, naming it.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import zipfile

MACHINE = {"x86_64": "Advanced Micro Devices X86-64", "arm64": "AArch64"}
LAYOUT = {
    "switchyard-router.zip": {"bootstrap"},
    "switchyard-extension-layer.zip": {
        "extensions/switchyard-extension",
        "switchyard-wrapper",
    },
}


def fail(msg):
    print(f"check_artifacts: {msg}", file=sys.stderr)
    sys.exit(1)


def version(text):
    return tuple(int(p) for p in text.split("."))


def readelf(args, path):
    out = subprocess.run(
        ["readelf", *args, path], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        fail(f"readelf {' '.join(args)} {path}: {out.stderr.strip()}")
    return out.stdout


def check_elf(path, arch, glibc_max, label):
    """The ELF's machine and the newest glibc symbol version it needs."""
    header = readelf(["-h"], path)
    m = re.search(r"Machine:\s+(.+)", header)
    machine = m.group(1).strip() if m else "?"
    if machine != MACHINE[arch]:
        fail(f"{label}: ELF machine is {machine!r}, {arch} needs {MACHINE[arch]!r}")
    needed = [
        version(v) for v in re.findall(r"Name: GLIBC_([0-9.]+)", readelf(["-V"], path))
    ]
    if not needed:
        fail(f"{label}: needs no GLIBC_ symbol version at all; not a glibc binary?")
    newest = max(needed)
    if newest > version(glibc_max):
        fail(
            f"{label}: needs GLIBC_{'.'.join(map(str, newest))}, newer than "
            f"{glibc_max} (AL2023 has 2.34); build with cargo lambda --target <triple>.{glibc_max}"
        )
    return newest


def check_zip(path, arch, glibc_max):
    name = os.path.basename(path)
    if not os.path.isfile(path):
        fail(f"{path} is missing; build it with: bash deploy/artifacts.sh {arch}")
    with zipfile.ZipFile(path) as z:
        entries = {i.filename: i for i in z.infolist() if not i.is_dir()}
        want = LAYOUT[name]
        if set(entries) != want:
            fail(f"{path}: holds {sorted(entries)}, Lambda wants exactly {sorted(want)}")
        unpacked = 0
        newest = (0,)
        with tempfile.TemporaryDirectory() as tmp:
            for entry, info in entries.items():
                mode = (info.external_attr >> 16) & 0o777
                if mode & 0o555 != 0o555:
                    fail(f"{path}: {entry} has mode {oct(mode)}; Lambda runs it, so 0755")
                unpacked += info.file_size
                extracted = z.extract(info, tmp)
                with open(extracted, "rb") as f:
                    is_elf = f.read(4) == b"\x7fELF"
                if entry.endswith("switchyard-wrapper"):
                    continue
                if not is_elf:
                    fail(f"{path}: {entry} is not an ELF executable")
                newest = max(newest, check_elf(extracted, arch, glibc_max, f"{path}: {entry}"))
    size = os.path.getsize(path)
    print(
        f"{arch:7} {name:32} {size / 1e6:6.1f} MB zipped, {unpacked / 1e6:6.1f} MB "
        f"unpacked, needs GLIBC_{'.'.join(map(str, newest))} (<= {glibc_max}), "
        f"ELF machine {MACHINE[arch]}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--glibc", default="2.34")
    p.add_argument("--dir", default="target/artifacts")
    p.add_argument("arches", nargs="+", choices=sorted(MACHINE))
    a = p.parse_args()
    for arch in a.arches:
        for name in LAYOUT:
            check_zip(os.path.join(a.dir, arch, name), arch, a.glibc)
    print("check_artifacts: all checks passed")


if __name__ == "__main__":
    main()
