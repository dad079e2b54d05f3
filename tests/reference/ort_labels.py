"""Independent reference for the runtime's `exact` label maps: onnxruntime runs the model on a
given normalised input, numpy upsamples the logits bilinearly (align_corners=False, written here
from the definition) to the requested size, and takes the argmax over classes.

usage: ort_labels.py MODEL.onnx INPUT.npy HEIGHT WIDTH OUT.npy
"""
import sys

import numpy as np
import onnxruntime as ort


def axis_taps(src, dst):
    """Source indices and weights of bilinear resampling with half-pixel centres."""
    pos = np.maximum((np.arange(dst, dtype=np.float64) + 0.5) * src / dst - 0.5, 0.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    w1 = pos - i0
    return i0, i1, w1


def bilinear(logits, height, width):
    """logits [K, h, w] -> [K, height, width]."""
    _, h, w = logits.shape
    y0, y1, wy = axis_taps(h, height)
    x0, x1, wx = axis_taps(w, width)
    rows = logits[:, y0, :] * (1 - wy)[None, :, None] + logits[:, y1, :] * wy[None, :, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :] + rows[:, :, x1] * wx[None, None, :]


def main():
    model, input_path, height, width, out = sys.argv[1:6]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    x = np.load(input_path).astype(np.float32)
    (logits,) = session.run(["logits"], {session.get_inputs()[0].name: x})
    up = bilinear(logits[0].astype(np.float64), int(height), int(width))
    np.save(out, up.argmax(axis=0).astype(np.uint8))


if __name__ == "__main__":
    main()
