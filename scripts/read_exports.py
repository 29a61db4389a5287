"""Reads mmtt exports with the real clients researchers use, and prints what they saw as JSON.

    read_exports.py hf DIR | coco DIR | webdataset DIR | mmtt DIR

hf: datasets.load_dataset("imagefolder", data_dir=DIR); coco: pycocotools (captions and the
instances' RLE masks, decoded); webdataset: Python's tarfile, grouped by key; mmtt: json.
Masks are reported as the SHA-256 of their 0/255 pixels in row-major order, so the Rust test can
compare them with the stored masks.
"""
import hashlib
import json
import os
import sys

import numpy as np
from PIL import Image


def mask_digest(arr):
    a = (np.asarray(arr) > 0).astype(np.uint8) * 255
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def read_hf(d):
    import datasets
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("imagefolder", data_dir=d)
    out = {}
    for split, part in ds.items():
        rows = []
        for i, r in enumerate(part):
            split_dir = os.path.join(d, split)
            if "mask" in r and r["mask"] is not None and not isinstance(r["mask"], str):
                mask = r["mask"]
            else:
                mask = Image.open(os.path.join(split_dir, r["mask_file_name"]))
            img = r["image"]
            rows.append({"id": r["id"], "text": r["text"], "mask": mask_digest(mask.convert("L")), "size": list(img.size),
                         "regions": r["regions"], "source_id": r["source_id"], "method": r["method"],
                         "image_id": r.get("image_id"), "instance_id": r.get("instance_id")})
        out[split] = {"columns": part.column_names, "rows": rows}
    return out


def read_coco(d):
    from pycocotools.coco import COCO
    from pycocotools import mask as mask_utils
    out = {}
    for name in sorted(os.listdir(os.path.join(d, "annotations"))):
        if not name.startswith("captions_"):
            continue
        split = name[len("captions_"):-len(".json")]
        caps = COCO(os.path.join(d, "annotations", name))
        inst = COCO(os.path.join(d, "annotations", f"instances_{split}.json"))
        rows = []
        for img_id in sorted(caps.getImgIds()):
            info = caps.loadImgs(img_id)[0]
            texts = [a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=img_id))]
            anns = inst.loadAnns(inst.getAnnIds(imgIds=img_id))
            m = inst.annToMask(anns[0])
            rle = anns[0]["segmentation"]
            assert mask_utils.area(rle) == anns[0]["area"], "area"
            assert os.path.exists(os.path.join(d, split, info["file_name"])), info["file_name"]
            rows.append({"id": info["mmtt_id"], "text": texts[0], "mask": mask_digest(m), "size": [info["width"], info["height"]],
                         "image_id": info.get("mmtt_image_id"), "instance_id": anns[0].get("mmtt_instance_id")})
        out[split] = {"rows": rows}
    return out


def read_webdataset(d):
    import tarfile
    out = {}
    for split in sorted(os.listdir(d)):
        sd = os.path.join(d, split)
        if not os.path.isdir(sd) or split == "charts":
            continue
        groups = {}
        shards = sorted(f for f in os.listdir(sd) if f.endswith(".tar"))
        for shard in shards:
            with tarfile.open(os.path.join(sd, shard)) as t:
                for m in t.getmembers():
                    key, ext = m.name.split(".", 1)
                    groups.setdefault(key, {})[ext] = t.extractfile(m).read()
        rows = []
        for key, g in sorted(groups.items()):
            meta = json.loads(g["json"])
            mask = Image.open(__import__("io").BytesIO(g["mask.png"]))
            rows.append({"key": key, "id": meta["id"], "text": g["txt"].decode(), "mask": mask_digest(mask.convert("L")),
                         "exts": sorted(g), "image_id": meta.get("image_id"), "instance_id": meta.get("instance_id")})
        out[split] = {"shards": len(shards), "rows": rows}
    return out


def read_mmtt(d):
    out = {}
    for split in ("train", "val", "test"):
        p = os.path.join(d, f"{split}.json")
        if not os.path.exists(p):
            continue
        rows = []
        for r in json.load(open(p)):
            mask = Image.open(os.path.join(d, r["mask_path"]))
            assert os.path.exists(os.path.join(d, r["img_path"]))
            rows.append({"id": r["mmtt_id"], "image_id": r["image_id"], "text": r["caption"], "mask": mask_digest(mask.convert("L")),
                         "multilabel": r["multilabel"], "instance_id": r["instance_id"]})
        out[split] = {"rows": rows}
    return out


if __name__ == "__main__":
    import contextlib
    kind, d = sys.argv[1], sys.argv[2]
    # the clients chat on stdout (pycocotools' "loading annotations..."): keep it for the JSON
    with contextlib.redirect_stdout(sys.stderr):
        result = {"hf": read_hf, "coco": read_coco, "webdataset": read_webdataset, "mmtt": read_mmtt}[kind](d)
    print(json.dumps(result))
