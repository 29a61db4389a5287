//! The samples ForgeryTalker stage 2 (`mmtt_model::talker::train`) trains and is validated on,
//! straight from the platform: the accepted triplets of one split of the project (the forged
//! image and its forgery mask from the blob store, the accepted explanation as the caption), or
//! the same from an `hf` or `mmtt` export folder (the layouts [`super::training`] reads for the
//! FPN; the `mmtt` layout is the release's JSON with `caption` and `mask_path`).
//!
//! The region labels (what `regions = "gt"` puts into the instruction) come from the reference
//! region extractor over the caption, as the FPN's `LabelSource::Extractor` makes them.

use super::export::{ExportOptions, Format, formats::release_split_name, select};
use super::training::{DataSource, ExportLayout, TrainData, check_label_order, export_layout, labels_of};
use crate::app::App;
use crate::storage::split::Split;
use anyhow::{Context, Result, anyhow, bail};
use mmtt_model::fpn::LabelSource;
use mmtt_model::talker::train::TalkerSample;
use std::path::{Path, PathBuf};

/// One split's samples from `data`, in id order (at most `data.limit`).
pub async fn samples(app: &App, data: &TrainData, split: Split) -> Result<Vec<TalkerSample>> {
    let mut out = match data.source {
        DataSource::Db => from_db(app, split, data.include_unreviewed).await?,
        DataSource::Export => {
            let dir = data.export_dir()?.to_path_buf();
            tokio::task::spawn_blocking(move || from_export(&dir, split)).await.map_err(|e| anyhow!("reading the export: {e}"))??
        }
    };
    if let Some(n) = data.limit {
        out.truncate(n);
    }
    Ok(out)
}

/// The sample of one triplet: its caption's labels from the region extractor.
fn sample(id: String, image: PathBuf, mask: Option<PathBuf>, caption: &str) -> Result<TalkerSample> {
    let labels = labels_of(caption, &[], LabelSource::Extractor).with_context(|| format!("sample {id}"))?;
    Ok(TalkerSample { id, image, mask, caption: caption.to_string(), labels })
}

/// The accepted (with `include_unreviewed`, also submitted) triplets of `split` in the database:
/// the forged image's and the mask's blob paths, the release `image_id` as the sample id, in id
/// order.
pub async fn from_db(app: &App, split: Split, include_unreviewed: bool) -> Result<Vec<TalkerSample>> {
    check_label_order()?;
    let mut o = ExportOptions::new(Format::Mmtt, PathBuf::new());
    o.include_unreviewed = include_unreviewed;
    let (rows, ..) = select(app, &o).await?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for s in rows.into_iter().filter(|s| s.split == split) {
        let mut file = |what: &str, key: &crate::storage::store::BlobKey| match app.store.local_file(key) {
            Ok(p) => Some(p),
            Err(e) => {
                missing.push(format!("the {what} of {} ({e})", s.image_id));
                None
            }
        };
        let (image, mask) = (file("image", &s.image), file("mask", &s.mask));
        if let (Some(image), Some(mask)) = (image, mask) {
            out.push(sample(s.image_id, image, Some(mask), &s.text)?);
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} files of the {split} split cannot be read from the blob store {}: {}{} (restore the missing blobs, or check the store's URL and credentials)",
            missing.len(),
            app.store.location(),
            missing.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if missing.len() > 5 { ", ..." } else { "" }
        );
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// One split of an `hf` (`SPLIT/metadata.jsonl`: `text`, `file_name`, `mask_file_name`) or `mmtt`
/// (`train.json`, `val.json`, `test.json`: `caption`, `img_path`, `mask_path`) export folder, in
/// id order. A record without a mask field has no mask (no mask loss for it); a named file that
/// is missing is an error.
pub fn from_export(dir: &Path, split: Split) -> Result<Vec<TalkerSample>> {
    check_label_order()?;
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
    let mut out = Vec::new();
    match export_layout(dir)? {
        ExportLayout::Mmtt => {
            let file = dir.join(format!("{}.json", release_split_name(split)));
            if !file.is_file() {
                return Ok(out);
            }
            let records: Vec<serde_json::Value> =
                serde_json::from_str(&read(&file)?).with_context(|| format!("{}: not a JSON list of samples", file.display()))?;
            for (i, r) in records.iter().enumerate() {
                let field = |k: &str| r.get(k).and_then(|v| v.as_str()).ok_or_else(|| anyhow!("{} record {i}: no `{k}`", file.display()));
                let id = match r.get("image_id") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) if !v.is_null() => v.to_string(),
                    _ => bail!("{} record {i}: no `image_id`", file.display()),
                };
                let mask = r.get("mask_path").and_then(|v| v.as_str()).map(|m| dir.join(m));
                out.push(sample(id, dir.join(field("img_path")?), mask, field("caption")?)?);
            }
        }
        ExportLayout::Hf => {
            let base = dir.join(split.name());
            let file = base.join("metadata.jsonl");
            if !file.is_file() {
                return Ok(out);
            }
            for (n, line) in read(&file)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let r: serde_json::Value =
                    serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", file.display(), n + 1))?;
                let field =
                    |k: &str| r.get(k).and_then(|v| v.as_str()).ok_or_else(|| anyhow!("{} line {}: no `{k}`", file.display(), n + 1));
                let id = field("image_id").or_else(|_| field("id"))?.to_string();
                let mask = r.get("mask_file_name").and_then(|v| v.as_str()).map(|m| base.join(m));
                out.push(sample(id, base.join(field("file_name")?), mask, field("text")?)?);
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    for s in &out {
        for (what, p) in std::iter::once(("image", &s.image)).chain(s.mask.as_ref().map(|m| ("mask", m))) {
            if !p.is_file() {
                bail!(
                    "{}: the {what} of sample {} is missing: re-run the export into that folder (it resumes and repairs)",
                    p.display(),
                    s.id
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::GrayImage::new(4, 4).save(p).unwrap();
    }

    #[test]
    fn both_export_layouts_give_caption_mask_and_labels() {
        let d = tempfile::tempdir().unwrap();
        // the release's layout
        let mm = d.path().join("mm");
        png(&mm.join("images/7.png"));
        png(&mm.join("masks/7.png"));
        png(&mm.join("images/3.png"));
        let recs = serde_json::json!([
            {"image_id": 7, "caption": "The left eye is blurred.", "img_path": "images/7.png", "mask_path": "masks/7.png"},
            {"image_id": "3", "caption": "A seam on the nose.", "img_path": "images/3.png"},
        ]);
        std::fs::write(mm.join("train.json"), recs.to_string()).unwrap();
        let s = from_export(&mm, Split::Train).unwrap();
        assert_eq!(s.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), ["3", "7"], "id order");
        assert_eq!(s[1].mask.as_deref(), Some(mm.join("masks/7.png").as_path()));
        assert_eq!(s[0].mask, None, "no mask_path: no mask");
        assert_eq!(s[1].caption, "The left eye is blurred.");
        assert!(s[1].labels[0] && s[1].labels.iter().filter(|x| **x).count() == 1, "eye only: {:?}", s[1].labels);
        assert!(s[0].labels[4], "nose");
        assert!(from_export(&mm, Split::Validation).unwrap().is_empty(), "no val.json: no samples");
        // a named mask that is missing is refused
        std::fs::remove_file(mm.join("masks/7.png")).unwrap();
        let e = from_export(&mm, Split::Train).unwrap_err().to_string();
        assert!(e.contains("mask of sample 7"), "{e}");

        // the hf layout
        let hf = d.path().join("hf");
        png(&hf.join("validation/images/k1.png"));
        png(&hf.join("validation/masks/k1.png"));
        let line = serde_json::json!({"image_id": "k1", "text": "The lips are smeared.", "file_name": "images/k1.png", "mask_file_name": "masks/k1.png"});
        std::fs::write(hf.join("validation/metadata.jsonl"), format!("{line}\n")).unwrap();
        let s = from_export(&hf, Split::Validation).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].mask.as_deref(), Some(hf.join("validation/masks/k1.png").as_path()));
        assert!(s[0].labels[2], "lip");
    }
}
