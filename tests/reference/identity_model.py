"""Writes a model whose logits are its (normalised) input: the labels it gives depend only on the
runtime's own pre- and post-processing, which makes it the probe for comparing them across
machines.

usage: identity_model.py OUT.onnx HEIGHT WIDTH
"""
import sys

import onnx
from onnx import TensorProto, helper


def main():
    out, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    node = helper.make_node("Identity", ["input"], ["logits"])
    graph = helper.make_graph(
        [node],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, h, w])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"semask.classes": '["red", "green", "blue"]'})
    onnx.save(model, out)


if __name__ == "__main__":
    main()
