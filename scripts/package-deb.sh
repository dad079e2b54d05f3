#!/usr/bin/env bash
# Debian packages of semask-edge: binary, built-in model's calibration folder, device profiles,
# --help texts, README, and an example systemd unit for a camera service.
#
#   scripts/package-deb.sh amd64    dist/semask-edge_<version>_amd64.deb (the host's release build)
#   scripts/package-deb.sh arm64    dist/semask-edge_<version>_arm64.deb (scripts/aarch64.sh build)
#
# Installs to /usr/bin/semask-edge, /usr/share/semask-edge/{calibration,targets}/ and
# /usr/share/doc/semask-edge/. Needs dpkg-deb (Debian's dpkg); arm64 also the cross toolchain,
# which scripts/aarch64.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
case "$arch" in
  amd64)
    # After the tests this rebuilds semask-edge alone (.cargo/config.toml says why).
    cargo build-host-binary
    binary=target/release/semask-edge
    strip_tool=strip
    ;;
  arm64)
    scripts/aarch64.sh build
    binary=target/aarch64-unknown-linux-gnu/release/semask-edge
    strip_tool=aarch64-linux-gnu-strip
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
host=target/release/semask-edge
[ -x "$host" ] || cargo build-host-binary

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/semask-edge" "$root/usr/share/doc/semask-edge/examples" \
  "$root/usr/share/doc/semask-edge/help"
install -m 0755 "$binary" "$root/usr/bin/semask-edge"
"$strip_tool" --strip-debug "$root/usr/bin/semask-edge"
cp -r calibration targets "$root/usr/share/semask-edge/"
install -m 0644 README.md "$root/usr/share/doc/semask-edge/README.md"
install -m 0644 scripts/packaging/semask-edge-camera.service "$root/usr/share/doc/semask-edge/examples/"
# --help of every command (the host binary's: the text is the same on every architecture).
"$host" --help > "$root/usr/share/doc/semask-edge/help/semask-edge.txt"
for command in run info bench record devices build-engine doctor; do
  "$host" help "$command" > "$root/usr/share/doc/semask-edge/help/$command.txt"
done
cat > "$root/usr/share/doc/semask-edge/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: semask-edge
License: Apache-2.0
COPYRIGHT
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: semask-edge
Version: $version
Architecture: $arch
Maintainer: semask-edge developers <semask-edge@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.31), libgcc-s1, libstdc++6
Suggests: ffmpeg
Section: science
Priority: optional
Homepage: https://github.com/semask-edge/semask-edge
Description: semantic segmentation of road scenes on the edge (SeMask-T FPN)
 Runs an ONNX export of SeMask-FPN with TensorRT on Jetsons (when built with the tensorrt
 feature) or tract on the CPU, on cameras, recorded drives (MP4, MJPEG, images) or synthetic
 scenes, writing label maps, overlays, videos and per-frame latency statistics. A small model
 trained on synthetic scenes is built in: 'semask-edge run --frames 150 --output drive.mp4'.
CONTROL
mkdir -p dist
out=dist/semask-edge_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out"
