#!/usr/bin/env bash
# Fuzzes every reader of hostile input with libFuzzer (cargo fuzz, nightly): the ONNX loader and
# metadata, the MJPEG splitter, the MP4 demuxer and H.264 decoding, the image decoders under the
# pixel limit, and the text parsers (URIs, synth:// queries, device profiles, class files,
# calibration caches). The targets are tests/fuzz/fuzz_targets/, wrappers of semask_edge::fuzz.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 600); all targets by default
#
# FUZZ_JOBS=N runs N targets at a time (default 1; each libFuzzer process uses one core).
#
# Corpora start from seeds made from the test fixtures (target/fuzz/corpus/<target>/) and grow
# there. An input that crashes, aborts, times out (30 s) or exceeds 2 GB is saved by libFuzzer
# and copied to tests/fuzz/regressions/<target>/, which tests/fuzz_regressions.rs replays in
# CI. The summary gives executions and findings per target (also in target/fuzz/summary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(onnx_model mjpeg mp4 image text)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
work=target/fuzz
mkdir -p "$work"

seed() {  # seed <target> <files...>
  local dir=$work/corpus/$1
  shift
  mkdir -p "$dir"
  for f in "$@"; do [ -f "$f" ] && cp "$f" "$dir/" || true; done
}
host=target/release/semask-edge
[ -x "$host" ] || cargo build-host-binary
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
"$host" record -i "synth://?frames=3&size=64x32" -o "$seeds/clip.mjpeg" >/dev/null
"$host" run -i "synth://?frames=3&size=64x32" -o "$seeds/clip.mp4" -q >/dev/null
"${SEMASK_PYTHON:-python3}" tests/reference/identity_model.py "$seeds/identity.onnx" 8 16
printf 'synth://?seed=3&frames=20&size=64x32&fps=15&speed=5' > "$seeds/synth.txt"
printf 'v4l2:///dev/video0' > "$seeds/camera.txt"
printf '["road", "sky"]' > "$seeds/classes.json"
printf '{"classes": ["a", "b"], "palette": [[1, 2, 3], [4, 5, 6]]}' > "$seeds/table.json"
head -n 20 calibration/semask-tiny-synth/calib.cache > "$seeds/calib.cache"
printf '# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic' > "$seeds/l4t.txt"
seed onnx_model "$seeds/identity.onnx"
seed mjpeg "$seeds/clip.mjpeg" tests/fixtures/images/street_112x224.jpg
seed mp4 "$seeds/clip.mp4"
seed image tests/fixtures/images/*.png tests/fixtures/images/*.jpg
seed text targets/*.toml "$seeds"/*.txt "$seeds"/*.json "$seeds/calib.cache"

fuzz_one() {  # fuzz_one <target>: one libFuzzer run, its findings copied, its summary line written
  local t=$1 artifacts=$work/artifacts/$1
  mkdir -p "$artifacts"
  echo "=== $t: $seconds s"
  cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" "$work/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$work/$t.log" 2>&1 || true
  grep -E '^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY)' "$work/$t.log" || true
  local runs found corpus
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
  found=$(find "$artifacts" -type f | wc -l)
  if [ "$found" -gt 0 ]; then
    mkdir -p "tests/fuzz/regressions/$t"
    cp "$artifacts"/* "tests/fuzz/regressions/$t/"
  fi
  corpus=$(find "$work/corpus/$t" -type f | wc -l)
  echo "$t: ${runs:-?} executions in $seconds s, corpus $corpus inputs, $found findings" >"$work/$t.summary"
}

# Build once before running targets side by side.
cargo +nightly fuzz build --fuzz-dir tests/fuzz >/dev/null
jobs_max=${FUZZ_JOBS:-1}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  fuzz_one "$t" &
done
wait
for t in "${targets[@]}"; do cat "$work/$t.summary"; done >"$work/summary.txt"
echo "--- summary"
cat "$work/summary.txt"
