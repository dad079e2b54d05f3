"""Plots a semask-train run's log.csv: training loss (smoothed) and held-out mIoU / pixel
accuracy against iterations, as an SVG for the docs.

usage: python3 docs/plot_training_curve.py RUN_DIR/log.csv OUT.svg [TITLE]
(needs matplotlib: python3 -m pip install matplotlib)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    log, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else log
    rows = list(csv.DictReader(open(log)))
    it = [int(r["iteration"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    window = 50
    smooth = [sum(loss[max(0, i - window + 1):i + 1]) / len(loss[max(0, i - window + 1):i + 1]) for i in range(len(loss))]
    val = [(int(r["iteration"]), float(r["val_miou"]), float(r["val_accuracy"])) for r in rows if r["val_miou"]]

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    # Every 5th raw point: the SVG stays small, the spread stays visible.
    a.plot(it[::5], loss[::5], color="#cccccc", linewidth=0.5, label="loss")
    a.plot(it, smooth, color="#1f77b4", label=f"loss ({window}-iteration mean)")
    a.set_xlabel("iteration")
    a.set_ylabel("CE + 0.4 CE(semantic)")
    a.legend()
    a.grid(alpha=0.3)
    if val:
        b.plot([v[0] for v in val], [100 * v[1] for v in val], "o-", label="held-out mIoU")
        b.plot([v[0] for v in val], [100 * v[2] for v in val], "s--", label="held-out pixel accuracy")
        for x, m, _ in val[-1:]:
            b.annotate(f"{100 * m:.1f}", (x, 100 * m), textcoords="offset points", xytext=(-10, 8))
    b.set_xlabel("iteration")
    b.set_ylabel("%")
    b.set_ylim(0, 100)
    b.legend(loc="lower right")
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
