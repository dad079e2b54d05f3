#!/usr/bin/env bash
# Usage: scripts/prerequisites.sh [--tests] [gstreamer] [PACKAGE...]
#
# Installs the system packages the build needs, when missing: libclang-dev (bindgen, for the
# V4L2 camera bindings) and nasm (openh264's SIMD). `gstreamer`: GStreamer's development files
# and plugins, for the cargo feature `gstreamer` (RTSP/RTP/CSI/gst:// inputs; the window,
# RTP and RTSP outputs; gstreamer1.0-x has the X window sink and the text overlay). With --tests
# also ffmpeg (the tests make clips with a writer other than ours), chromium (the browser
# view is tested in it), xvfb (the window is tested on a virtual screen), the `gstreamer`
# set (the tests build with that feature) and Mesa's software Vulkan device (lavapipe: the
# training crate's GPU tests run on it where there is no GPU); other
# scripts name their own extra packages (the aarch64 cross toolchain). The README's two set-up commands start with this, so a fresh
# Debian/Ubuntu machine needs nothing else; elsewhere it says what to install.
set -euo pipefail

packages=(libclang-dev nasm)
gstreamer=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
  gstreamer1.0-x)
tests=""
if [ "${1:-}" = "--tests" ]; then
  packages+=(ffmpeg chromium xvfb "${gstreamer[@]}" mesa-vulkan-drivers libvulkan1)
  tests=1
  shift
fi
for p in "$@"; do
  if [ "$p" = gstreamer ]; then packages+=("${gstreamer[@]}"); else packages+=("$p"); fi
done

if ! command -v dpkg-query >/dev/null; then
  # Not Debian: check the tools; libclang cannot be checked by name, bindgen says if it is missing.
  for tool in nasm ${tests:+ffmpeg}; do
    command -v "$tool" >/dev/null || { echo "missing $tool: install it (and libclang), then run this again" >&2; exit 1; }
  done
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (or your distribution's equivalents): install them, then run this again" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "missing ${missing[*]}: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
