#!/usr/bin/env python3
"""Writes tiny random-weight ONNX models with exactly the input/output names, shapes and value
ranges of mmtt's generator manifests (generators/manifests/*.json), for tests and benchmarks.

  mat.onnx:  image [1,3,512,512] in [-1,1], mask [1,1,512,512] (1 = keep), z [1,512]
             -> output [1,3,512,512] in [-1,1]  (tanh of a 3x3 conv of image|mask plus a z projection)
  lama.onnx: image [1,3,512,512] in [0,1], mask [1,1,512,512] (1 = fill)
             -> output [1,3,512,512] in [0,255]  (255 * sigmoid of two 3x3 convs)

Usage: make_tiny_models.py OUT_DIR [--width C]   (C = hidden channels, default 8)
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv(name, x, cin, cout, rng, k=3):
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.3).astype(np.float32), name + "_w")
    b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), name + "_b")
    node = helper.make_node("Conv", [x, w.name, b.name], [name], pads=[k // 2] * 4, kernel_shape=[k, k])
    return node, [w, b]


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mmtt-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def mat(out, width, rng):
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 512, 512])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 512, 512])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 512])
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])
    nodes, inits = [], []
    nodes.append(helper.make_node("Concat", ["image", "mask"], ["x"], axis=1))
    n, i = conv("h", "x", 4, width, rng); nodes.append(n); inits += i
    nodes.append(helper.make_node("Relu", ["h"], ["hr"]))
    n, i = conv("y", "hr", width, 3, rng); nodes.append(n); inits += i
    wz = numpy_helper.from_array((rng.standard_normal((512, 3)) * 0.05).astype(np.float32), "wz")
    shape = numpy_helper.from_array(np.array([1, 3, 1, 1], dtype=np.int64), "zshape")
    inits += [wz, shape]
    nodes.append(helper.make_node("MatMul", ["z", "wz"], ["zp"]))
    nodes.append(helper.make_node("Reshape", ["zp", "zshape"], ["zr"]))
    nodes.append(helper.make_node("Add", ["y", "zr"], ["s"]))
    nodes.append(helper.make_node("Tanh", ["s"], ["output"]))
    save(helper.make_graph(nodes, "tiny_mat", [image, mask, z], [output], inits), os.path.join(out, "mat.onnx"))


def lama(out, width, rng):
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 512, 512])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 512, 512])
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])
    nodes, inits = [], []
    nodes.append(helper.make_node("Concat", ["image", "mask"], ["x"], axis=1))
    n, i = conv("h", "x", 4, width, rng); nodes.append(n); inits += i
    nodes.append(helper.make_node("Relu", ["h"], ["hr"]))
    n, i = conv("y", "hr", width, 3, rng); nodes.append(n); inits += i
    scale = numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale")
    inits.append(scale)
    nodes.append(helper.make_node("Sigmoid", ["y"], ["sg"]))
    nodes.append(helper.make_node("Mul", ["sg", "scale"], ["output"]))
    save(helper.make_graph(nodes, "tiny_lama", [image, mask], [output], inits), os.path.join(out, "lama.onnx"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    mat(a.out, a.width, rng)
    lama(a.out, a.width, rng)
    print(os.path.join(a.out, "mat.onnx"), os.path.join(a.out, "lama.onnx"))


if __name__ == "__main__":
    main()
