#!/usr/bin/env python3
"""The Python reference pipeline for mmtt's ONNX generators: the same pre- and post-processing as
generators/src/forge/onnx.rs, written independently with numpy and onnxruntime, for parity tests
and benchmarks.

  onnx_reference.py forge --manifest M.json --model M.onnx --image I.png --mask M.png --seed S --out OUT.f32
      writes the generated image as float32 HWC in 0..255 (before rounding)
  onnx_reference.py bench --manifest M.json --model M.onnx --n N --threads T
      prints images/s of the same pipeline
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

MASK64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def open01(self):
        return ((self.next_u64() >> 11) + 1) / float(1 << 53)

    def normals(self, n):
        out = []
        while len(out) < n:
            u1, u2 = self.open01(), self.open01()
            r = math.sqrt(-2.0 * math.log(u1))
            t = 2.0 * math.pi * u2
            out += [r * math.cos(t), r * math.sin(t)]
        return np.array(out[:n], dtype=np.float32)


def spec(manifest, role):
    return next((i for i in manifest["inputs"] if i["role"] == role), None)


def prepare(manifest, rgb, hole, seed):
    lo, hi = manifest["image_range"]
    img = lo + (hi - lo) * (rgb.astype(np.float32) / np.float32(255.0))
    img = np.transpose(img, (2, 0, 1))[None].astype(np.float32)
    if manifest["zero_holes"]:
        img = np.where(hole[None, None], np.float32(0.0), img).astype(np.float32)
    keep = manifest["mask_convention"] == "keep"
    mask = (~hole if keep else hole).astype(np.float32)[None, None]
    feeds = {spec(manifest, "image")["name"]: img, spec(manifest, "mask")["name"]: mask}
    lat = spec(manifest, "latent")
    if lat is not None:
        dim = int(np.prod(lat["shape"][1:]))
        feeds[lat["name"]] = SplitMix64(seed).normals(dim)[None]
    return feeds


def postprocess(manifest, out):
    r = manifest["output_range"]
    if r == "auto":
        lo, hi = (0.0, 255.0) if out.max() > 1.5 else (0.0, 1.0)
    else:
        lo, hi = r
    v = (out[0] - np.float32(lo)) / np.float32(hi - lo) * np.float32(255.0)
    return np.clip(np.transpose(v, (1, 2, 0)), 0.0, 255.0).astype(np.float32)


def session(model, threads):
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["forge", "bench"])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--image")
    ap.add_argument("--mask")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    manifest = json.load(open(a.manifest))
    sess = session(a.model, a.threads)
    out_name = manifest["outputs"][0]["name"]
    if a.mode == "forge":
        rgb = np.asarray(Image.open(a.image).convert("RGB"))
        hole = np.asarray(Image.open(a.mask).convert("L")) > 0
        out = sess.run([out_name], prepare(manifest, rgb, hole, a.seed))[0]
        postprocess(manifest, out).tofile(a.out)
    else:
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        hole = np.zeros((512, 512), dtype=bool)
        hole[150:350, 120:380] = True
        sess.run([out_name], prepare(manifest, rgb, hole, 0))  # warm-up
        t = time.perf_counter()
        for i in range(a.n):
            out = sess.run([out_name], prepare(manifest, rgb, hole, i))[0]
            np.rint(postprocess(manifest, out)).astype(np.uint8)
        dt = time.perf_counter() - t
        print(json.dumps({"images_per_s": a.n / dt, "n": a.n, "threads": a.threads}))


if __name__ == "__main__":
    sys.exit(main())
