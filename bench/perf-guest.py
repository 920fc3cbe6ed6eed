#!/usr/bin/env python3
"""Top functions of a `perf record` of `edgeproxy serve`, the guest's named.

    EDGEPROXY_PERF_MAP=1 target/release/edgeproxy serve ... &
    perf record -F 1999 -p $PID -o perf.data -- sleep 10
    python3 bench/perf-guest.py /tmp/perf-$PID.map perf.data [how many]

perf would resolve the guest's addresses from the map itself, but the server
compiles the component twice (to set it up, then the set-up snapshot) and the
second compilation reuses the first's addresses, so perf may pick a stale
name. This reads the map's last block (the code that serves) and counts each
sample's own function, as `perf report --no-children` would.
"""
import bisect
import collections
import re
import subprocess
import sys


def last_block(map_path):
    entries = []
    for line in open(map_path):
        start, size, name = line.rstrip("\n").split(" ", 2)
        entries.append((int(start, 16), int(size, 16), name))
    # A new compilation starts where the addresses jump back below the first entry's.
    begin = max((i for i in range(1, len(entries)) if entries[i][0] < entries[i - 1][0] and entries[i][0] != entries[0][0]), default=0)
    functions = {}
    for start, size, name in entries[begin:]:
        # The same function appears under several names; keep the wasm one.
        if start not in functions or "wasm[" in name:
            functions[start] = (size, name)
    return functions


def main():
    map_path, data = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    functions = last_block(map_path)
    starts = sorted(functions)
    samples = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym", "-G"], capture_output=True, text=True, check=True).stdout
    counts, total = collections.Counter(), 0
    for line in samples.splitlines():
        fields = line.split()
        if not fields:
            continue
        total += 1
        ip = int(fields[0], 16)
        i = bisect.bisect_right(starts, ip) - 1
        if i >= 0 and ip < starts[i] + functions[starts[i]][0]:
            name = re.sub(r"wasm\[0\]::function\[\d+\]::", "", functions[starts[i]][1])
            name = re.sub(r"17h[0-9a-f]{16}E$", "", name)
        else:
            name = "native: " + " ".join(fields[1:])
        counts[name] += 1
    for name, n in counts.most_common(top):
        print(f"{100 * n / total:5.1f}% {name[:150]}")


if __name__ == "__main__":
    main()
