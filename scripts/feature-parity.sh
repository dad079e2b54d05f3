#!/usr/bin/env bash
# Usage: scripts/feature-parity.sh [TARGET]
#
# Checks that builds CI makes one after the other resolve the same features in the
# dependencies they share; a crate whose features differ is compiled twice, with everything
# above it (tract: minutes). Two pairs:
#   - for TARGET (default aarch64-unknown-linux-gnu): the binary alone, then the tests
#     (dev-dependencies), as scripts/aarch64.sh builds them;
#   - for this machine: the tests' feature set (`gstreamer` and the training crate's `gpu`),
#     then the amd64 package's build (the same without `gstreamer`), among the crates its
#     binary is built from.
# Prints the crates that differ and exits 1; the fix is to name those features in Cargo.toml's
# "feature parity" block.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-aarch64-unknown-linux-gnu}

features() { cargo tree -f "{p} [{f}]" --prefix none "$@" 2>/dev/null | sort -u; }
features -p semask-edge --target "$target" -e normal,build > /tmp/parity-bin.txt
features -p semask-edge --target "$target" -e normal,build,dev > /tmp/parity-test.txt
features --workspace -e normal,build,dev --features semask-train/gpu > /tmp/parity-ws.txt
features --workspace -e normal,build,dev --features semask-edge/gstreamer,semask-train/gpu > /tmp/parity-gst.txt
# What the package's binary is built from: only these crates matter in the second pair.
features -p semask-edge -e normal,build > /tmp/parity-pkg.txt

python3 - <<'PY'
import re, sys
def load(path):
    found = {}
    for line in open(path):
        m = re.match(r"(\S+) (v\S+)(?: \([^)]*\))? \[([^\]]*)\]", line.strip())
        if m and not m[1].startswith("semask-"):
            found.setdefault((m[1], m[2]), set()).update(f for f in m[3].split(",") if f)
    return found
bad = 0
package = load("/tmp/parity-pkg.txt").keys()
for first, second, what, among in [("bin", "test", "binary vs tests", None), ("ws", "gst", "package vs tests", package)]:
    a, b = load(f"/tmp/parity-{first}.txt"), load(f"/tmp/parity-{second}.txt")
    for key in sorted(a.keys() & b.keys() & (among or a.keys())):
        if a[key] != b[key]:
            bad += 1
            print(f"{what}: {key[0]} {key[1]}: {sorted(a[key])} vs {sorted(b[key])}")
print("feature parity:", "ok" if not bad else f"{bad} crates differ")
sys.exit(1 if bad else 0)
PY
