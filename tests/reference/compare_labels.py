"""Compares two folders of PNG outputs (label maps, colour maps, overlays) file by file.

usage: compare_labels.py A_DIR B_DIR MIN_AGREEMENT
Prints one JSON line: {"files": N, "agreement": fraction of equal pixels, "identical": files
byte-for-byte equal in pixels}; exits 1 when agreement < MIN_AGREEMENT (1.0: every pixel).
"""
import json
import os
import sys

import numpy as np
from PIL import Image


def main():
    a_dir, b_dir, minimum = sys.argv[1], sys.argv[2], float(sys.argv[3])
    names = sorted(n for n in os.listdir(a_dir) if n.endswith(".png"))
    if not names or names != sorted(n for n in os.listdir(b_dir) if n.endswith(".png")):
        print(json.dumps({"error": f"different files: {a_dir} vs {b_dir}"}))
        sys.exit(1)
    equal = total = identical = 0
    for name in names:
        a = np.asarray(Image.open(os.path.join(a_dir, name)))
        b = np.asarray(Image.open(os.path.join(b_dir, name)))
        if a.shape != b.shape:
            print(json.dumps({"error": f"{name}: shapes {a.shape} vs {b.shape}"}))
            sys.exit(1)
        same = a == b if a.ndim == 2 else (a == b).all(axis=-1)
        equal += int(same.sum())
        total += same.size
        identical += int(same.all())
    agreement = equal / total
    print(json.dumps({"files": len(names), "agreement": agreement, "identical": identical}))
    sys.exit(0 if agreement >= minimum else 1)


if __name__ == "__main__":
    main()
