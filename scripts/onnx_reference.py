#!/usr/bin/env python3
"""The Python reference pipeline for mmtt's ONNX generators: the same pre- and post-processing as
generators/src/forge/onnx.rs, written independently with numpy and onnxruntime, for parity tests
and benchmarks.

  onnx_reference.py forge --manifest M.json --model M.onnx --image I.png --mask M.png --seed S --out OUT.f32
      writes the generated image as float32 HWC in 0..255 (before rounding)
  onnx_reference.py bench --manifest M.json --model M.onnx --n N --threads T
      prints images/s of the same pipeline
  onnx_reference.py sdxl --models DIR --image I.png --mask M.png --seed S --steps N --strength X
                         --guidance G --prompt P --negative-prompt Q --out OUT.f32 --out-latents L.f32
      SDXL inpainting as diffusers' StableDiffusionXLInpaintPipeline does it for a 9-channel UNet,
      written here from the published algorithm with numpy + onnxruntime: OpenAI's CLIP BPE
      tokenizer, the penultimate hidden states of both encoders, Euler discrete sigmas and steps,
      classifier-free guidance, VAE scaling 0.13025, --scheduler euler|dpm++2m (DPM-Solver++ 2M) (see generators/src/forge/sdxl.rs for the
      documented choices: bilinear upscaling to 1024, latent means, SplitMix64 noise)
  onnx_reference.py e4s --models DIR --target T.f32 --source S.f32 --out OUT.f32 --out-labels L.u8
      the E4S graphs on two aligned faces (CHW float32 in 0..1 at 1024)
"""
import os
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


# ---------------------------------------------------------------- CLIP BPE (OpenAI's algorithm)

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


class ClipBpe:
    def __init__(self, d):
        import regex
        self.encoder = json.load(open(os.path.join(d, "vocab.json"), encoding="utf-8"))
        lines = open(os.path.join(d, "merges.txt"), encoding="utf-8").read().split("\n")
        merges = [tuple(l.split()) for l in lines if l and not l.startswith("#version")]
        self.ranks = {m: i for i, m in enumerate(merges)}
        cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
        tok = lambda k: cfg[k]["content"] if isinstance(cfg[k], dict) else cfg[k]
        self.bos, self.eos, self.pad = self.encoder[tok("bos_token")], self.encoder[tok("eos_token")], self.encoder[tok("pad_token")]
        self.max_len = cfg.get("model_max_length", 77)
        self.b2u = bytes_to_unicode()
        self.pat = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)

    def bpe(self, token):
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1]); i += 2
                else:
                    out.append(word[i]); i += 1
            word = tuple(out)
        return word

    def encode(self, text):
        import unicodedata, re
        text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().lower()
        ids = []
        for tok in self.pat.findall(text):
            tok = "".join(self.b2u[b] for b in tok.encode("utf-8"))
            ids += [self.encoder[t] for t in self.bpe(tok)]
        ids = [self.bos] + ids[: self.max_len - 2] + [self.eos]
        return ids + [self.pad] * (self.max_len - len(ids))


# ---------------------------------------------------------------- SDXL inpainting

def euler_schedule(cfg, steps):
    n = cfg["num_train_timesteps"]
    if cfg["beta_schedule"] == "linear":
        betas = np.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=np.float64)
    else:
        betas = np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n, dtype=np.float64) ** 2
    ac = np.cumprod(1.0 - betas)
    full = ((1 - ac) / ac) ** 0.5
    sp = cfg["timestep_spacing"]
    if sp == "leading":
        ratio = n // steps
        ts = (np.arange(0, steps) * ratio).round()[::-1].astype(np.float64) + cfg["steps_offset"]
    elif sp == "trailing":
        ts = np.round(np.arange(n, 0, -n / steps)) - 1
    else:
        ts = np.linspace(0, n - 1, steps, dtype=np.float64)[::-1].copy()
    sigmas = np.interp(ts, np.arange(0, n), full).astype(np.float32)
    sigmas = np.concatenate([sigmas, np.zeros(1, dtype=np.float32)])
    init_sigma = np.float32((sigmas.max() ** 2 + 1) ** 0.5) if sp == "leading" else sigmas.max()
    return ts.astype(np.float32), sigmas, init_sigma


def upscale_bilinear(x, k):
    """x [C,H,W] -> [C,kH,kW], half-pixel centres, edges clamped."""
    c, h, w = x.shape
    def taps(n_out, n):
        s = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) / np.float32(k) - np.float32(0.5), np.float32(0))
        i0 = np.minimum(np.floor(s).astype(np.int64), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, (s - i0).astype(np.float32)
    y0, y1, fy = taps(h * k, h)
    x0, x1, fx = taps(w * k, w)
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bot = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    return (top * (1 - fy)[None, :, None] + bot * fy[None, :, None]).astype(np.float32)


def downscale_box(x, k):
    c, h, w = x.shape
    return x.reshape(c, h // k, k, w // k, k).mean(axis=(2, 4), dtype=np.float32).astype(np.float32)


def sdxl(a):
    d = os.path.join(a.models, "sdxl")
    cfg = json.load(open(os.path.join(d, "scheduler", "scheduler_config.json")))
    sess = {n: session(os.path.join(d, n, "model.onnx"), a.threads) for n in ["text_encoder", "text_encoder_2", "unet", "vae_encoder", "vae_decoder"]}
    def feed(name, arrays):
        types = {i.name: i.type for i in sess[name].get_inputs()}
        conv = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
        return {k: v.astype(conv[types[k]]) for k, v in arrays.items()}
    run = lambda name, outs, arrays: [o.astype(np.float32) for o in sess[name].run(outs, feed(name, arrays))]
    rgb = np.asarray(Image.open(a.image).convert("RGB"))
    hole = np.asarray(Image.open(a.mask).convert("L")) > 0
    size = 1024
    k = size // rgb.shape[0]
    img = upscale_bilinear(np.transpose(rgb.astype(np.float32) / np.float32(255.0), (2, 0, 1)), k) * 2 - 1
    mask = np.repeat(np.repeat(hole, k, axis=0), k, axis=1).astype(np.float32)
    masked = np.where(mask[None] < 0.5, img, np.float32(0)).astype(np.float32)
    mask_lat = mask[::8, ::8][None, None]
    # prompts: [negative, positive]
    tk1 = ClipBpe(os.path.join(d, "tokenizer"))
    ids1 = np.array([tk1.encode(a.negative_prompt), tk1.encode(a.prompt)])
    tk2 = ClipBpe(os.path.join(d, "tokenizer_2"))
    ids2 = np.array([tk2.encode(a.negative_prompt), tk2.encode(a.prompt)])
    h1 = run("text_encoder", ["hidden_states.11"], {"input_ids": ids1})[0]
    pooled, h2 = run("text_encoder_2", ["text_embeds", "hidden_states.31"], {"input_ids": ids2})
    hidden = np.concatenate([h1, h2], axis=2)
    time_ids = np.array([[size, size, 0, 0, size, size]] * 2, dtype=np.float32)
    enc_out = [o.name for o in sess["vae_encoder"].get_outputs()][0]
    encode = lambda x: run("vae_encoder", [enc_out], {"sample": x[None]})[0][:, :4] * np.float32(0.13025)
    image_lat, masked_lat = encode(img), encode(masked)
    ts, sigmas, init_sigma = euler_schedule(cfg, a.steps)
    t_start = a.steps - min(int(a.steps * np.float32(a.strength)), a.steps)
    noise = SplitMix64(a.seed).normals(image_lat.size).reshape(image_lat.shape)
    dpm = a.scheduler == "dpm++2m"
    vp = lambda sg: (np.float32(1) / np.sqrt(sg * sg + np.float32(1)), sg / np.sqrt(sg * sg + np.float32(1)))
    if dpm:
        if a.strength >= 1.0:
            latents = noise.copy()
        else:
            al, sv = vp(sigmas[t_start])
            latents = al * image_lat + sv * noise
    elif a.strength >= 1.0:
        latents = noise * init_sigma
    else:
        latents = image_lat + noise * sigmas[t_start]
    latents = latents.astype(np.float32)
    g = np.float32(a.guidance)
    prev_x0 = None
    for i in range(t_start, a.steps):
        sigma, t = sigmas[i], ts[i]
        scaled = latents if dpm else latents / np.float32((sigma * sigma + 1) ** 0.5)
        x = np.concatenate([scaled, mask_lat, masked_lat], axis=1)
        sample = np.concatenate([x, x], axis=0)
        out = run("unet", ["out_sample"], {"sample": sample, "timestep": np.array([t, t], dtype=np.float32), "encoder_hidden_states": hidden,
                                            "text_embeds": pooled, "time_ids": time_ids})[0]
        eps = out[0:1] + g * (out[1:2] - out[0:1])
        if dpm:
            # DPM-Solver++ (2M): data prediction, first order at the first and the last step
            a_s, s_s = vp(sigma)
            a_t, s_t = vp(sigmas[i + 1])
            lam = lambda al, sg: np.log(al) - np.log(sg)
            with np.errstate(divide="ignore"):
                h = lam(a_t, s_t) - lam(a_s, s_s)
            x0 = a_s * latents - s_s * eps if cfg["prediction_type"] == "v_prediction" else (latents - s_s * eps) / a_s
            em1 = np.exp(-h) - np.float32(1)
            new = (s_t / s_s) * latents - a_t * em1 * x0
            if prev_x0 is not None and i + 1 < a.steps:
                a_p, s_p = vp(sigmas[i - 1])
                r0 = (lam(a_s, s_s) - lam(a_p, s_p)) / h
                new = new - np.float32(0.5) * a_t * em1 * ((np.float32(1) / r0) * (x0 - prev_x0))
            latents = new.astype(np.float32)
            prev_x0 = x0
            continue
        if cfg["prediction_type"] == "v_prediction":
            pred = eps * (-sigma / (sigma * sigma + 1) ** 0.5) + latents / (sigma * sigma + 1)
        else:
            pred = latents - sigma * eps
        deriv = (latents - pred) / sigma
        latents = (latents + deriv * (sigmas[i + 1] - sigma)).astype(np.float32)
    dec = run("vae_decoder", ["sample"], {"latent_sample": latents / np.float32(0.13025)})[0][0]
    unit = np.clip(dec / 2 + np.float32(0.5), 0, 1).astype(np.float32)
    small = downscale_box(unit, k)
    (np.transpose(small, (1, 2, 0)) * np.float32(255.0)).astype(np.float32).tofile(a.out)
    latents.astype(np.float32).tofile(a.out_latents)


# ---------------------------------------------------------------- E4S

def e4s(a):
    d = os.path.join(a.models, "e4s")
    parser = session(os.path.join(d, "face_parser.onnx"), a.threads)
    gen = session(os.path.join(d, "swap_generator.onnx"), a.threads)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
    def parse(x):
        small = (downscale_box(x, 2) - mean) / std
        logits = parser.run(["logits"], {"image": small[None].astype(np.float32)})[0][0]
        return np.argmax(logits, axis=0).astype(np.uint8)
    one_hot = lambda l: (np.arange(19)[:, None, None] == l[None]).astype(np.float32)[None]
    t = np.fromfile(a.target, dtype=np.float32).reshape(3, 1024, 1024)
    s = np.fromfile(a.source, dtype=np.float32).reshape(3, 1024, 1024)
    lt, ls = parse(t), parse(s)
    out = gen.run(["swapped"], {"target": (t * 2 - 1)[None], "source": (s * 2 - 1)[None], "target_parsing": one_hot(lt), "source_parsing": one_hot(ls)})[0][0]
    np.clip((out + 1) / 2, 0, 1).astype(np.float32).tofile(a.out)
    np.concatenate([lt.ravel(), ls.ravel()]).tofile(a.out_labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["forge", "bench", "sdxl", "e4s"])
    ap.add_argument("--manifest")
    ap.add_argument("--model")
    ap.add_argument("--models")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--strength", type=float, default=0.99)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scheduler", default="euler", choices=["euler", "dpm++2m"])
    ap.add_argument("--prompt", default="")
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--out-latents")
    ap.add_argument("--target")
    ap.add_argument("--source")
    ap.add_argument("--out-labels")
    ap.add_argument("--image")
    ap.add_argument("--mask")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.mode == "sdxl":
        return sdxl(a)
    if a.mode == "e4s":
        return e4s(a)
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
