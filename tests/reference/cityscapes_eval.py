"""Independent reference for `semask-train eval`: the official `cityscapesscripts` pixel-level
evaluation of a folder of label-id predictions against a Cityscapes-layout ground truth.

usage: cityscapes_eval.py CITYSCAPES_ROOT SPLIT PREDICTIONS_DIR OUT.json

Ground truth: CITYSCAPES_ROOT/gtFine/SPLIT/<city>/<stem>_gtFine_labelIds.png; prediction:
PREDICTIONS_DIR/<stem>.png (what `eval --save-labels` writes). Writes {"miou": .., "iou": {name: ..}}
with NaN IoUs as null.
"""
import glob
import json
import math
import os
import sys

from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs


def main():
    root, split, predictions, out = sys.argv[1:5]
    gt = sorted(glob.glob(os.path.join(root, "gtFine", split, "*", "*_gtFine_labelIds.png")))
    if not gt:
        sys.exit(f"no *_gtFine_labelIds.png under {root}/gtFine/{split}")
    pred = [os.path.join(predictions, os.path.basename(g).replace("_gtFine_labelIds.png", ".png")) for g in gt]
    args = cs.args
    args.evalInstLevelScore = False  # needs *_instanceIds.png, and is not what we compare
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    result = cs.evaluateImgLists(pred, gt, args)
    scores = result["classScores"]
    clean = lambda v: None if v is None or math.isnan(v) else float(v)
    json.dump(
        {"miou": clean(result["averageScoreClasses"]), "iou": {k: clean(v) for k, v in scores.items()}},
        open(out, "w"),
        indent=1,
    )


if __name__ == "__main__":
    main()
