#!/usr/bin/env bash
# Soak test: FRAMES synth:// frames (default 100000) through the built-in model with every sink
# on (an MP4 video, label PNGs into a folder kept to its newest 1000 files, per-frame
# statistics), sampling the process's resident memory, open file descriptors and threads every
# 1000 frames. Afterwards it checks that nothing was lost (every frame in the statistics, the
# summary and the video) and fits the slope of each series after the warm-up (the first 10 %):
# all must be flat.
#
#   scripts/soak.sh [FRAMES]        results in target/soak/ (samples.csv, report.json)
#
# SOAK_THREADS sets --threads (default 0: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-100000}
host=target/release/semask-edge
[ -x "$host" ] || cargo build-host-binary
out=target/soak
rm -rf "$out"
mkdir -p "$out/labels"

"$host" run -i "synth://?seed=7&frames=$frames&size=640x320" -o "$out/soak.mp4" --labels "$out/labels" \
  --stats "$out/stats.jsonl" --threads "${SOAK_THREADS:-0}" -q >"$out/summary.txt" 2>"$out/stderr.txt" &
pid=$!
# If this script stops early, the run stops with it rather than going on unsampled.
trap 'kill "$pid" 2>/dev/null || true' EXIT
echo "frames,rss_kib,fds,threads,seconds" >"$out/samples.csv"
start=$(date +%s)
next=0
while kill -0 "$pid" 2>/dev/null; do
  done_frames=$(wc -l 2>/dev/null <"$out/stats.jsonl.partial" || echo 0)
  if [ "$done_frames" -ge "$next" ] && [ -r "/proc/$pid/status" ]; then
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    [ -n "$rss" ] && echo "$done_frames,$rss,$fds,$threads,$(($(date +%s) - start))" >>"$out/samples.csv"
    next=$(((done_frames / 1000 + 1) * 1000))
    # The label folder rotates: the newest 1000 PNGs stay. A `.partial` file can be renamed
    # between ls's listing and its stat: ls then fails, which must not end the soak (it did, at
    # frame 63,007 of the first full run, leaving the run unsampled).
    (cd "$out/labels" && { ls -t 2>/dev/null || true; } | grep -v '\.partial$' | tail -n +1001 | xargs -r rm -f) || true
  fi
  sleep 1
done
set +e
wait "$pid"
status=$?
trap - EXIT
set -e
echo "semask-edge exited with $status"
cat "$out/summary.txt" | head -n 1

"${SEMASK_PYTHON:-python3}" - "$out" "$frames" "$status" <<'PY'
import csv, json, subprocess, sys
out, frames, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(f"{out}/samples.csv"))]
steady = [r for r in rows if r["frames"] >= frames * 0.1]
def slope(key):
    xs = [r["frames"] for r in steady]; ys = [r[key] for r in steady]
    n = len(xs); mx = sum(xs) / n; my = sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 1000  # per 1000 frames
lines = [json.loads(l) for l in open(f"{out}/stats.jsonl")]
statuses = {}
for l in lines:
    statuses[l["status"]] = statuses.get(l["status"], 0) + 1
probe = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
                        "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", f"{out}/soak.mp4"],
                       capture_output=True, text=True)
video_frames = int(probe.stdout.strip() or 0)
summary = open(f"{out}/summary.txt").readline().strip()
report = {
    "frames": frames, "exit_status": status, "summary": summary,
    "stats_lines": len(lines), "statuses": statuses, "video_frames": video_frames,
    "samples": len(rows), "steady_samples": len(steady),
    "rss_kib": {"first": rows[0]["rss_kib"], "steady_min": min(r["rss_kib"] for r in steady),
                "steady_max": max(r["rss_kib"] for r in steady), "slope_per_1000_frames": slope("rss_kib")},
    "fds": {"min": min(r["fds"] for r in steady), "max": max(r["fds"] for r in steady), "slope_per_1000_frames": slope("fds")},
    "threads": {"min": min(r["threads"] for r in steady), "max": max(r["threads"] for r in steady)},
    "seconds": rows[-1]["seconds"],
}
json.dump(report, open(f"{out}/report.json", "w"), indent=2)
print(json.dumps(report, indent=2))
ok = (status == 0 and len(lines) == frames and statuses.get("ok") == frames and video_frames == frames
      and summary.startswith(f"{frames} frames in, {frames} written, 0 failed, 0 dropped")
      # A PNG or the video may be mid-write at a sample: at most 2 descriptors come and go.
      and report["fds"]["max"] - report["fds"]["min"] <= 2 and abs(report["fds"]["slope_per_1000_frames"]) < 0.05
      and report["threads"]["max"] == report["threads"]["min"]
      and abs(report["rss_kib"]["slope_per_1000_frames"]) < 64)
print("soak:", "flat and nothing lost" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
