"""Independent check of an ONNX file: `onnx.checker` (full check, with shape inference), the op
census of the graph, and every output computed by onnxruntime on a given input.

usage: onnx_run.py MODEL.onnx INPUT.npy OUT_DIR
Writes OUT_DIR/<output name>.npy and prints one JSON line:
{"checker": "ok", "ops": {"Conv": 9, ...}, "outputs": ["logits", ...], "opset": 17}
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, input_path, out_dir = sys.argv[1:4]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    ops = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    x = np.load(input_path).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: x})
    os.makedirs(out_dir, exist_ok=True)
    for name, value in zip(names, values):
        np.save(os.path.join(out_dir, f"{name}.npy"), value.astype(np.float32))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    print(json.dumps({"checker": "ok", "ops": ops, "outputs": names, "opset": opset}))


if __name__ == "__main__":
    main()
