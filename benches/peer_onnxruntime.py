"""onnxruntime as the speed peer of benches/network.rs.

Loads MODEL with only its logits output kept (the subgraph that computes it, as the runtime
does), then serves timing requests on stdin so that the Rust bench can interleave rounds of
tract and onnxruntime on the same machine state:

    <- "run N"   runs the network N times on INPUT.npy
    -> {"times_ms": [...]}    one JSON line with the wall time of each run

usage: peer_onnxruntime.py MODEL.onnx INPUT.npy THREADS [LOGITS_OUTPUT]
"""
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor


def main():
    model_path, input_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logits = sys.argv[4] if len(sys.argv) > 4 else "logits"
    model = onnx.load(model_path)
    input_name = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}][0]
    pruned = Extractor(model).extract_model([input_name], [logits])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(pruned.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.load(input_path).astype(np.float32)
    print(json.dumps({"ready": True, "onnxruntime": ort.__version__}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] != "run":
            print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
            continue
        times = []
        for _ in range(int(parts[1])):
            start = time.perf_counter()
            session.run([logits], {input_name: x})
            times.append((time.perf_counter() - start) * 1e3)
        print(json.dumps({"times_ms": times}), flush=True)


if __name__ == "__main__":
    main()
