#!/usr/bin/env bash
# semask-edge for Jetsons (aarch64), built on an x86-64 Debian machine and tested under qemu.
#
#   scripts/aarch64.sh build   release binary at target/aarch64-unknown-linux-gnu/release/semask-edge
#                              (run it with: qemu-aarch64 -L /usr/aarch64-linux-gnu <binary> ...)
#   scripts/aarch64.sh test    the numerical tests under emulation, then the same outputs on
#                              aarch64 and x86-64 compared
#   scripts/aarch64.sh check   only that comparison
#
# It installs what it needs: rustup's aarch64 target; Debian's gcc-aarch64-linux-gnu,
# g++-aarch64-linux-gnu, libc6-dev-arm64-cross (the sysroot, also for bindgen's camera
# bindings), qemu-user (the cargo runner, .cargo/config.toml) and libclang-dev. openh264's NEON
# assembly is built in (gcc assembles it; no nasm on aarch64). On a Jetson itself, build natively
# with the README's commands instead.
#
# Under emulation (10-100x slower than native; no speed figure means anything here) the tests
# run are the ones that say the numbers are right, chosen to keep CI under its hour:
#   - unit tests (pre/post-processing, resampling, YUV, decoders' parts, metadata, calibration);
#   - tests/parity.rs: official fixtures tiny and tiny2, raw and onnxruntime-optimised forms,
#     logits within 1e-4 of PyTorch's;
#   - tests/cli.rs but bench and the built-in model's two runs (fp32, int8) that the
#     cross-checks below repeat on more frames: labels against onnxruntime, resizing, label ids;
#   - tests/streaming.rs' MP4 (ours, ffmpeg's with B-frames) and MJPEG replays (with an identity
#     model under emulation: they check decoding, order and counts, not the network);
#   - cross-checks of this script: int8 and fp32 labels of the built-in model on 4 synth frames,
#     with tract's SVE2 and its Orin-like NEON dot-product kernels (>= 99.5 % equal to x86-64's),
#     and the pre/post-processing (an identity model: labels, colours and overlays
#     byte-identical to x86-64's, for both upsampling modes).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
RUNNER="qemu-aarch64 -L $SYSROOT"
BIN=target/$TARGET/release/semask-edge

install() {
  rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
  scripts/prerequisites.sh gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
}

build() {
  install
  cargo build --release --target "$TARGET" -p semask-edge --bin semask-edge
  echo "built $BIN"
}

cross_check() {
  local host=target/release/semask-edge python=${SEMASK_PYTHON:-python3}
  [ -x "$host" ] || cargo build-host-binary
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "--- aarch64 binary"
  $RUNNER "$BIN" --version
  $RUNNER "$BIN" doctor --json
  # The built-in model, fp32 and int8, on 4 synthetic frames (half a million labels): once with
  # the kernels tract picks for qemu's CPU (it reports SVE2 and dot product), once with an
  # Orin's Cortex-A78AE set (NEON with fp16 and dot product, no SVE).
  for precision in fp32 int8; do
    "$host" run --target cpu --precision "$precision" -i "synth://?frames=4&size=512x256" \
      --labels "$work/x86-$precision" -q >/dev/null
    for isa in "" "+fp16,+dotprod,-sve2"; do
      TRACT_CPU_ISA="$isa" $RUNNER "$BIN" run --target cpu --precision "$precision" \
        -i "synth://?frames=4&size=512x256" --labels "$work/arm-$precision$isa" -q >/dev/null
      echo -n "$precision labels, aarch64 (tract ISA ${isa:-as detected}) vs x86-64: "
      "$python" tests/reference/compare_labels.py "$work/x86-$precision" "$work/arm-$precision$isa" 0.995
    done
  done
  # Pre- and post-processing alone: an identity network, odd frame sizes, both upsampling modes.
  "$python" tests/reference/identity_model.py "$work/identity.onnx" 72 136
  for upsample in exact fast; do
    for arch in x86 arm; do
      local cmd=("$host")
      [ $arch = arm ] && cmd=($RUNNER "$BIN")
      "${cmd[@]}" run --target cpu -m "$work/identity.onnx" -i "synth://?frames=4&size=301x157" \
        --upsample "$upsample" --labels "$work/$arch-$upsample/l" --color "$work/$arch-$upsample/c" \
        --overlay "$work/$arch-$upsample/o" -q >/dev/null
    done
    for kind in l c o; do
      echo -n "pre/post ($upsample, $kind), aarch64 vs x86-64: "
      "$python" tests/reference/compare_labels.py "$work/x86-$upsample/$kind" "$work/arm-$upsample/$kind" 1.0
    done
  done
}

run_tests() {
  install
  export SEMASK_TEST_RUNNER="$RUNNER"
  # The arm64 package takes its binary from this build. The tests below reuse it: Cargo.toml's
  # feature-parity block gives the binary the features the tests' dev-dependencies switch on in
  # shared crates (before it, they compiled half the tree again: 7 minutes).
  build
  # bench's test is about timing and plotting, not numbers, and takes minutes under qemu. The
  # built-in model's fp32 and int8 runs (18 and 32 s under qemu) are cross_check's, below, on
  # twice the frames and against x86-64's labels.
  cargo test --release --target "$TARGET" -p semask-edge --lib --test parity --test cli -- \
    --skip bench_reports_every_run_as_json_and_svg \
    --skip default_run_uses_the_builtin_model_on_synthetic_scenes \
    --skip int8_runs_the_builtin_quantized_model
  cargo test --release --target "$TARGET" -p semask-edge --test streaming -- \
    mjpeg_recorded_by_us mp4_written_by_ffmpeg mp4_written_by_us
  cross_check
}

case "${1:-}" in
  build) build ;;
  test) run_tests ;;
  check) build && cross_check ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
