#!/usr/bin/env python3
"""Writes tiny random-weight ONNX models with exactly the input/output names, shapes and value
ranges of mmtt's generator manifests (generators/manifests/*.json), for tests and benchmarks.

  mat.onnx:  image [1,3,512,512] in [-1,1], mask [1,1,512,512] (1 = keep), z [1,512]
             -> output [1,3,512,512] in [-1,1]  (tanh of a 3x3 conv of image|mask plus a z projection)
  lama.onnx: image [1,3,512,512] in [0,1], mask [1,1,512,512] (1 = fill)
             -> output [1,3,512,512] in [0,255]  (255 * sigmoid of two 3x3 convs)

  sdxl/:     the Optimum layout of stable-diffusion-xl-1.0-inpainting-0.1 with tiny graphs of the
             real names, shapes and dtypes (generators/manifests/sdxl.json): tokenizer/ and
             tokenizer_2/ (a tiny CLIP BPE vocabulary: vocab.json, merges.txt, tokenizer_config.json),
             text_encoder (int32 ids -> hidden_states.11 [B,77,768]), text_encoder_2 (int64 ids ->
             text_embeds [B,1280], hidden_states.31 [B,77,1280]), unet (9-channel sample, timestep,
             encoder_hidden_states [B,77,2048], text_embeds, time_ids -> out_sample), vae_encoder
             (-> latent_parameters, 8 channels at 1/8), vae_decoder, scheduler/scheduler_config.json
             (SDXL's Euler discrete settings). With --fp16-unet the UNet's inputs and output are float16.
  e4s/:      face_parser.onnx (image [1,3,512,512] -> logits [1,19,512,512]) and swap_generator.onnx
             (target, source [1,3,1024,1024] in [-1,1], target_parsing, source_parsing [1,19,512,512]
             -> swapped [1,3,1024,1024] in [-1,1]) (generators/manifests/e4s.json)

Usage: make_tiny_models.py OUT_DIR [--width C] [--fp16-unet]   (C = hidden channels, default 8)
"""
import json
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


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


CORPUS = ("a high resolution photo of a natural human face realistic skin texture sharp focus blurry deformed distorted "
          "disfigured cartoon painting illustration watermark text low quality smooth retouched portrait of the person eyes nose mouth "
          "lips cheeks forehead chin detailed studio lighting")


def clip_tokenizer(d, pad, merges_n=120):
    """A tiny CLIP BPE vocabulary (CLIP's layout: 256 byte symbols, the same with </w>, merges, specials)."""
    os.makedirs(d, exist_ok=True)
    b2u = bytes_to_unicode()
    symbols = list(b2u.values())
    vocab = symbols + [s + "</w>" for s in symbols]
    words = {}
    for w in CORPUS.split():
        t = tuple(b2u[b] for b in w.encode())
        t = t[:-1] + (t[-1] + "</w>",)
        words[t] = words.get(t, 0) + 1
    merges = []
    for _ in range(merges_n):
        pairs = {}
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] = pairs.get(p, 0) + c
        if not pairs:
            break
        best = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        merges.append(best)
        vocab.append(best[0] + best[1])
        nw = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1]); i += 2
                else:
                    out.append(w[i]); i += 1
            nw[tuple(out)] = c
        words = nw
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    json.dump({t: i for i, t in enumerate(vocab)}, open(os.path.join(d, "vocab.json"), "w"), ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad,
               "model_max_length": 77, "do_lower_case": True}, open(os.path.join(d, "tokenizer_config.json"), "w"))
    return len(vocab)


def text_encoder(path, vocab, dim, hidden_name, pooled, ids_type, rng):
    ids = helper.make_tensor_value_info("input_ids", ids_type, ["batch", 77])
    outs = [helper.make_tensor_value_info(hidden_name, TensorProto.FLOAT, ["batch", 77, dim]),
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", 77, dim])]
    inits = [init("emb", rng.standard_normal((vocab, dim)) * 0.5), init("wa", rng.standard_normal((dim, 16)) * 0.2),
             init("wb", rng.standard_normal((16, dim)) * 0.2), init("wl", rng.standard_normal((dim, 16)) * 0.2),
             init("wm", rng.standard_normal((16, dim)) * 0.2)]
    nodes = []
    idx = "input_ids"
    if ids_type == TensorProto.INT32:
        nodes.append(helper.make_node("Cast", ["input_ids"], ["ids64"], to=TensorProto.INT64)); idx = "ids64"
    nodes += [helper.make_node("Gather", ["emb", idx], ["x"], axis=0),
              helper.make_node("MatMul", ["x", "wa"], ["xa"]), helper.make_node("MatMul", ["xa", "wb"], ["xb"]),
              helper.make_node("Add", ["x", "xb"], ["xs"]), helper.make_node("Tanh", ["xs"], [hidden_name]),
              helper.make_node("MatMul", [hidden_name, "wl"], ["la"]), helper.make_node("MatMul", ["la", "wm"], ["lb"]),
              helper.make_node("Tanh", ["lb"], ["last_hidden_state"])]
    if pooled:
        outs.insert(0, helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", dim]))
        inits += [init("wp", rng.standard_normal((dim, dim // 8)) * 0.1), init("wq", rng.standard_normal((dim // 8, dim)) * 0.1)]
        nodes += [helper.make_node("ReduceMean", [hidden_name], ["pm"], axes=[1], keepdims=0),
                  helper.make_node("MatMul", ["pm", "wp"], ["pa"]), helper.make_node("MatMul", ["pa", "wq"], ["text_embeds"])]
    else:
        outs.append(helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch", dim]))
        nodes.append(helper.make_node("ReduceMean", ["last_hidden_state"], ["pooler_output"], axes=[1], keepdims=0))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save(helper.make_graph(nodes, "tiny_text_encoder", [ids], outs, inits), path)


def unet(path, width, rng, fp16=False):
    ft = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    ins = [helper.make_tensor_value_info("sample", ft, ["batch", 9, "h", "w"]),
           helper.make_tensor_value_info("timestep", ft, ["steps"]),
           helper.make_tensor_value_info("encoder_hidden_states", ft, ["batch", 77, 2048]),
           helper.make_tensor_value_info("text_embeds", ft, ["batch", 1280]),
           helper.make_tensor_value_info("time_ids", ft, ["batch", 6])]
    out = helper.make_tensor_value_info("out_sample", ft, ["batch", 4, "h", "w"])
    nodes, inits = [], []
    names = {}
    for i in ins:
        if fp16:
            nodes.append(helper.make_node("Cast", [i.name], [i.name + "_f"], to=TensorProto.FLOAT)); names[i.name] = i.name + "_f"
        else:
            names[i.name] = i.name
    n, i = conv("h0", names["sample"], 9, width, rng, k=1); nodes.append(n); inits += i
    inits += [init("wc", rng.standard_normal((2048, width)) * 0.05), init("wt", rng.standard_normal((1280, width)) * 0.05),
              init("wi", rng.standard_normal((6, width)) * 0.0005), init("freq", rng.standard_normal((1, width)) * 3.0),
              init("tdiv", 1000.0), numpy_helper.from_array(np.array([-1, width, 1, 1], dtype=np.int64), "cshape"),
              numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1")]
    nodes += [helper.make_node("ReduceMean", [names["encoder_hidden_states"]], ["ehm"], axes=[1], keepdims=0),
              helper.make_node("MatMul", ["ehm", "wc"], ["c1"]), helper.make_node("MatMul", [names["text_embeds"], "wt"], ["c2"]),
              helper.make_node("MatMul", [names["time_ids"], "wi"], ["c3"]),
              helper.make_node("Div", [names["timestep"], "tdiv"], ["ts"]), helper.make_node("Unsqueeze", ["ts", "ax1"], ["tu"]),
              helper.make_node("MatMul", ["tu", "freq"], ["tf"]), helper.make_node("Sin", ["tf"], ["c4"]),
              helper.make_node("Add", ["c1", "c2"], ["c12"]), helper.make_node("Add", ["c12", "c3"], ["c123"]),
              helper.make_node("Add", ["c123", "c4"], ["cond"]), helper.make_node("Reshape", ["cond", "cshape"], ["condr"]),
              helper.make_node("Add", ["h0", "condr"], ["h1"]), helper.make_node("Tanh", ["h1"], ["h2"])]
    n, i = conv("o", "h2", width, 4, rng); nodes.append(n); inits += i
    last = "o"
    if fp16:
        nodes.append(helper.make_node("Cast", ["o"], ["out_sample"], to=TensorProto.FLOAT16))
    else:
        nodes.append(helper.make_node("Identity", ["o"], ["out_sample"]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save(helper.make_graph(nodes, "tiny_unet", ins, [out], inits), path)


def vae(d, rng):
    x = helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 3, "H", "W"])
    lp = helper.make_tensor_value_info("latent_parameters", TensorProto.FLOAT, ["batch", 8, "h", "w"])
    nodes = [helper.make_node("AveragePool", ["sample"], ["p"], kernel_shape=[8, 8], strides=[8, 8])]
    n, inits = conv("latent_parameters", "p", 3, 8, rng, k=1); nodes.append(n)
    os.makedirs(os.path.join(d, "vae_encoder"), exist_ok=True)
    save(helper.make_graph(nodes, "tiny_vae_encoder", [x], [lp], inits), os.path.join(d, "vae_encoder", "model.onnx"))
    z = helper.make_tensor_value_info("latent_sample", TensorProto.FLOAT, ["batch", 4, "h", "w"])
    y = helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 3, "H", "W"])
    n, inits = conv("d", "latent_sample", 4, 3 * 64, rng, k=1)
    nodes = [n, helper.make_node("DepthToSpace", ["d"], ["ds"], blocksize=8, mode="CRD"), helper.make_node("Tanh", ["ds"], ["sample"])]
    os.makedirs(os.path.join(d, "vae_decoder"), exist_ok=True)
    save(helper.make_graph(nodes, "tiny_vae_decoder", [z], [y], inits), os.path.join(d, "vae_decoder", "model.onnx"))


SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.21.0.dev0", "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
             "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
             "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
             "use_karras_sigmas": False}


def sdxl(out, width, rng, fp16_unet):
    d = os.path.join(out, "sdxl")
    v1 = clip_tokenizer(os.path.join(d, "tokenizer"), "<|endoftext|>")
    v2 = clip_tokenizer(os.path.join(d, "tokenizer_2"), "!")
    text_encoder(os.path.join(d, "text_encoder", "model.onnx"), v1, 768, "hidden_states.11", False, TensorProto.INT32, rng)
    text_encoder(os.path.join(d, "text_encoder_2", "model.onnx"), v2, 1280, "hidden_states.31", True, TensorProto.INT64, rng)
    unet(os.path.join(d, "unet", "model.onnx"), width, rng, fp16_unet)
    vae(d, rng)
    os.makedirs(os.path.join(d, "scheduler"), exist_ok=True)
    json.dump(SCHEDULER, open(os.path.join(d, "scheduler", "scheduler_config.json"), "w"), indent=1)
    json.dump({"_class_name": "ORTStableDiffusionXLInpaintPipeline", "note": "tiny random-weight test models made by mmtt"},
              open(os.path.join(d, "model_index.json"), "w"))


def e4s(out, width, rng):
    d = os.path.join(out, "e4s")
    os.makedirs(d, exist_ok=True)
    img = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 512, 512])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 19, 512, 512])
    n, inits = conv("c", "image", 3, 19, rng)
    bias = np.zeros((1, 19, 1, 1), dtype=np.float32); bias[0, 1] = 1.5; bias[0, 10] = 0.8; bias[0, 17] = 0.8
    inits.append(init("cb", bias))
    save(helper.make_graph([n, helper.make_node("Add", ["c", "cb"], ["logits"])], "tiny_face_parser", [img], [logits], inits),
         os.path.join(d, "face_parser.onnx"))
    ins = [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 1024, 1024]),
           helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 3, 1024, 1024]),
           helper.make_tensor_value_info("target_parsing", TensorProto.FLOAT, [1, 19, 512, 512]),
           helper.make_tensor_value_info("source_parsing", TensorProto.FLOAT, [1, 19, 512, 512])]
    out_t = helper.make_tensor_value_info("swapped", TensorProto.FLOAT, [1, 3, 1024, 1024])
    inits = [init("scales", [1.0, 1.0, 2.0, 2.0]), init("roi", np.zeros(0))]
    nodes = [helper.make_node("Concat", ["target_parsing", "source_parsing"], ["pp"], axis=1),
             helper.make_node("Resize", ["pp", "roi", "scales"], ["pu"], mode="nearest"),
             helper.make_node("Concat", ["target", "source", "pu"], ["x"], axis=1)]
    n, i = conv("h", "x", 44, width, rng, k=1); nodes.append(n); inits += i
    nodes.append(helper.make_node("Tanh", ["h"], ["ht"]))
    n, i = conv("y", "ht", width, 3, rng, k=1); nodes.append(n); inits += i
    nodes.append(helper.make_node("Tanh", ["y"], ["swapped"]))
    save(helper.make_graph(nodes, "tiny_e4s_generator", ins, [out_t], inits), os.path.join(d, "swap_generator.onnx"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--fp16-unet", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    mat(a.out, a.width, rng)
    lama(a.out, a.width, rng)
    sdxl(a.out, a.width, rng, a.fp16_unet)
    e4s(a.out, a.width, rng)
    print(os.path.join(a.out, "mat.onnx"), os.path.join(a.out, "lama.onnx"))


if __name__ == "__main__":
    main()
