//! The four export formats. Each writes one split at a time, samples in id order, images in
//! parallel (rayon), and counts finished samples in [`Out::done`].

use super::{ExportOptions, Format, Out, Sample};
use crate::dataset::annotation::multilabel;
use crate::storage::split::Split;
use anyhow::{Context, Result, anyhow};
use mmtt_generators::registry::Family;
use rayon::prelude::*;
use std::io::Write;
use std::sync::atomic::Ordering;

pub fn write(o: &ExportOptions, out: &Out, samples: &[Sample], bar: &indicatif::ProgressBar) -> Result<()> {
    for split in Split::ALL {
        let part: Vec<&Sample> = samples.iter().filter(|s| s.split == split).collect();
        if part.is_empty() {
            continue;
        }
        match o.format {
            Format::Hf => hf(o, out, split, &part, bar)?,
            Format::Coco => coco(out, split, &part, bar)?,
            Format::Webdataset => webdataset(o, out, split, &part, bar)?,
            Format::Mmtt => mmtt(out, split, &part, bar)?,
        }
    }
    Ok(())
}

fn tick(out: &Out, bar: &indicatif::ProgressBar) {
    out.done.fetch_add(1, Ordering::Relaxed);
    bar.inc(1);
}

/// The per-sample record shared by the formats' JSON.
fn record(s: &Sample) -> serde_json::Value {
    let mut r = serde_json::json!({
        "id": s.id, "source_id": s.source_id, "donor_id": s.donor_id, "method": s.method, "generator": s.generator,
        "dataset": s.dataset, "split": s.split.name(), "text": s.text, "regions": s.regions,
        "annotator_id": s.annotator_id, "review_status": s.review_status, "active_time_s": s.active_time_s, "word_count": s.word_count,
        "image_id": s.image_id, "instance_id": s.instance_id,
    });
    // written while model assistance was on: how (absent otherwise, as before assistance existed)
    if let Some(a) = &s.assistance {
        r["assistance"] = a.clone();
    }
    r
}

fn hf(o: &ExportOptions, out: &Out, split: Split, part: &[&Sample], bar: &indicatif::ProgressBar) -> Result<()> {
    let dir = split.name();
    part.par_iter().try_for_each(|s| -> Result<()> {
        out.blob(&format!("{dir}/images/{}.png", s.key), &s.image)?;
        out.blob(&format!("{dir}/masks/{}.png", s.key), &s.mask)?;
        if o.originals {
            out.blob(&format!("{dir}/originals/{}.png", s.key), &s.original)?;
        }
        tick(out, bar);
        Ok(())
    })?;
    let mut lines = String::new();
    for s in part {
        let mut r = record(s);
        r["file_name"] = format!("images/{}.png", s.key).into();
        r["mask_file_name"] = format!("masks/{}.png", s.key).into();
        if o.originals {
            r["original_file_name"] = format!("originals/{}.png", s.key).into();
        }
        lines += &serde_json::to_string(&r)?;
        lines.push('\n');
    }
    out.bytes(&format!("{dir}/metadata.jsonl"), lines.as_bytes())
}

fn coco(out: &Out, split: Split, part: &[&Sample], bar: &indicatif::ProgressBar) -> Result<()> {
    let dir = split.name();
    let store = &out.store_ref();
    let masks: Vec<(String, u64, [u32; 4], u32, u32)> = part
        .par_iter()
        .map(|s| -> Result<_> {
            out.blob(&format!("{dir}/{}.png", s.key), &s.image)?;
            let png = store.get(&s.mask).with_context(|| format!("mask of {}", s.id))?;
            let m =
                image::load_from_memory_with_format(&png, image::ImageFormat::Png).with_context(|| format!("mask of {}", s.id))?.to_luma8();
            let (w, h) = m.dimensions();
            let runs = super::rle::runs(m.as_raw(), w as usize, h as usize);
            let (area, bbox) = super::rle::area_and_bbox(m.as_raw(), w as usize, h as usize);
            tick(out, bar);
            Ok((super::rle::to_string(&runs), area, bbox, w, h))
        })
        .collect::<Result<_>>()?;
    let info = serde_json::json!({"description": "mmtt export: forged faces, forgery masks, explanations", "version": "1.0"});
    let licenses = serde_json::json!([{"id": 1, "name": "research use; see the dataset card", "url": ""}]);
    let images: Vec<serde_json::Value> = part
        .iter()
        .zip(&masks)
        .enumerate()
        .map(|(i, (s, m))| serde_json::json!({"id": i + 1, "file_name": format!("{}.png", s.key), "width": m.3, "height": m.4, "license": 1, "mmtt_id": s.id,
                                              "mmtt_image_id": s.image_id, "mmtt_instance_id": s.instance_id}))
        .collect();
    let captions: Vec<serde_json::Value> = part
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"id": i + 1, "image_id": i + 1, "caption": s.text, "regions": s.regions, "method": s.method, "mmtt_instance_id": s.instance_id}))
        .collect();
    let instances: Vec<serde_json::Value> = masks
        .iter()
        .zip(part)
        .enumerate()
        .map(|(i, ((counts, area, bbox, w, h), s))| {
            serde_json::json!({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 1, "area": area, "bbox": bbox,
                               "segmentation": {"size": [h, w], "counts": counts}, "mmtt_instance_id": s.instance_id})
        })
        .collect();
    let c = serde_json::json!({"info": info, "licenses": licenses, "images": images, "annotations": captions});
    out.bytes(&format!("annotations/captions_{dir}.json"), &serde_json::to_vec(&c)?)?;
    let categories = serde_json::json!([{"id": 1, "name": "forged", "supercategory": "face"}]);
    let inst =
        serde_json::json!({"info": info, "licenses": licenses, "images": images, "annotations": instances, "categories": categories});
    out.bytes(&format!("annotations/instances_{dir}.json"), &serde_json::to_vec(&inst)?)
}

/// Bytes a file takes in a tar: header plus data padded to 512.
fn tar_size(len: u64) -> u64 {
    512 + len.div_ceil(512) * 512
}

fn webdataset(o: &ExportOptions, out: &Out, split: Split, part: &[&Sample], bar: &indicatif::ProgressBar) -> Result<()> {
    let dir = split.name();
    let store = out.store_ref();
    // the shard plan depends only on the samples and their stored sizes: a resumed run plans the
    // same shards and keeps the finished ones
    let mut shards: Vec<Vec<(&Sample, String, String)>> = vec![Vec::new()];
    let mut size = 0u64;
    for s in part {
        let txt = s.text.clone();
        let json = serde_json::to_string(&record(s))?;
        let len = |k: &crate::storage::store::BlobKey| store.size(k).map_err(|e| anyhow!("store file of {}: {e}", s.id));
        let bytes = tar_size(len(&s.image)?) + tar_size(len(&s.mask)?) + tar_size(txt.len() as u64) + tar_size(json.len() as u64);
        if size > 0 && size + bytes > o.shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(v) = shards.last_mut() {
            v.push((*s, txt, json));
        }
    }
    shards.par_iter().enumerate().try_for_each(|(n, items)| -> Result<()> {
        // deterministic bytes (ustar headers, mode 0644, mtime 0): a resume verifies a shard
        // an earlier run left against the tar this run would write, member for member, byte for byte
        out.produced(&format!("{dir}/{dir}-{n:06}.tar"), |w: &mut dyn Write| {
            let mut b = tar::Builder::new(w);
            for (s, txt, json) in items {
                let mut add = |name: String, data: &[u8]| -> Result<()> {
                    let mut h = tar::Header::new_ustar();
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    h.set_mtime(0);
                    h.set_cksum();
                    b.append_data(&mut h, name, data)?;
                    Ok(())
                };
                add(format!("{}.png", s.key), &store.get(&s.image)?)?;
                add(format!("{}.mask.png", s.key), &store.get(&s.mask)?)?;
                add(format!("{}.txt", s.key), txt.as_bytes())?;
                add(format!("{}.json", s.key), json.as_bytes())?;
            }
            b.into_inner()?.flush()?;
            Ok(())
        })?;
        for _ in items {
            tick(out, bar);
        }
        Ok(())
    })
}

/// The image id prefix the authors' code reads the method from (spec section 8).
pub fn release_prefix(family: &str) -> &'static str {
    match family.parse::<Family>() {
        Ok(Family::Diffusion) => "sd",
        Ok(Family::Transformer) => "mat",
        Ok(Family::Swap) => "e4s",
        Ok(Family::Inpaint) | Err(_) => "inpaint",
    }
}

/// The authors' split file names.
pub fn release_split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Validation => "val",
        Split::Test => "test",
    }
}

/// The authors' format: each sample under its release `image_id` ([`Sample::image_id`]: the
/// authors' own for imported samples) with its `instance_id`.
fn mmtt(out: &Out, split: Split, part: &[&Sample], bar: &indicatif::ProgressBar) -> Result<()> {
    part.par_iter().try_for_each(|s| -> Result<()> {
        out.blob(&format!("images/{}.png", s.image_id), &s.image)?;
        out.blob(&format!("masks/{}.png", s.image_id), &s.mask)?;
        tick(out, bar);
        Ok(())
    })?;
    let records: Vec<serde_json::Value> = part
        .iter()
        .map(|s| {
            let id = &s.image_id;
            serde_json::json!({
                "image_id": id, "instance_id": s.instance_id, "caption": s.text,
                "img_path": format!("images/{id}.png"), "mask_path": format!("masks/{id}.png"),
                "multilabel": multilabel(&s.text), "method": s.method, "mmtt_id": s.id,
            })
        })
        .collect();
    out.bytes(&format!("{}.json", release_split_name(split)), &serde_json::to_vec_pretty(&records)?)
}
