//! The reviewer's automatic checks beside the false-positive flags (issue 17), each with the
//! words that triggered it, and the review queue's risk score. Pure functions: `web::review`
//! reads the rows and shows the findings.
//!
//! **References to the original image.** The paper's third guideline forbids language that needs
//! the original (it is not available in practice). A finding is one of:
//! - a phrase of [`ORIGINAL_PHRASES`] ("compared to the original", "than before", "no longer",
//!   "used to be", "in the source image", ...);
//! - the rule for the rest: a *change verb* ([`CHANGE_VERBS`]: changed, altered, modified,
//!   replaced, swapped, edited, removed, added, enlarged, shrunk, moved, reshaped, ...) right after
//!   a *passive or perfect auxiliary* ([`AUXILIARIES`]: is, was, were, has been, have been, had
//!   been, got, has, have), with at most one adverb between ("was slightly altered"): the text
//!   reports an edit, which only a comparison with the original can show;
//! - `original|source|real|unedited` before `image|photo|picture|face|version|one`
//!   ("the original face"), or `than (the) original|real|source`.
//!
//! Near misses are not findings: "original texture" (no image noun), "looks altered" or "seems
//! changed" (an impression of the forged image itself: no auxiliary), "unoriginal", "a changed
//! expression" (adjective use). Matching is case-insensitive on whole words.
//!
//! **Near-duplicates.** The same annotator's other annotations whose token 3-gram sets (tokens
//! of [`super::assist::tokens`]) have a Jaccard index of at least [`DUPLICATE_JACCARD`] with this
//! one (texts under three tokens compare their token sets). The shared 3-grams are shown.
//!
//! **Model disagreement.** The annotation's region chips against the model's confident regions
//! (its suggestion for the forgery): regions named but not predicted, and predicted but not named.
//!
//! **Risk** ([`risk`]): 2 per false-positive flag, 3 per original-image finding, 3 per
//! near-duplicate, 1 per disagreeing region, and 2 when the active time is under 1.5 times the
//! minimum. The queue orders by risk (highest first), then by age, then by id: deterministic.

use super::assist::tokens;
use std::collections::BTreeSet;

/// Phrases that compare with the original image, lowercase, matched on whole words.
pub const ORIGINAL_PHRASES: &[&str] = &[
    "compared to the original",
    "compared with the original",
    "compared to the real",
    "compared with the real",
    "than before",
    "than it was",
    "than in the original",
    "than the original",
    "than the real",
    "unlike the original",
    "unlike the real",
    "in the original",
    "in the source image",
    "no longer",
    "used to be",
    "used to look",
    "before the edit",
    "before editing",
    "before the manipulation",
    "after the edit",
    "after editing",
    "after the manipulation",
    "the original person",
];

/// The passive / perfect auxiliaries of the rule.
pub const AUXILIARIES: &[&str] = &["is", "was", "were", "are", "been", "got", "gotten", "has", "have", "had", "being"];

/// The change verbs of the rule (past participles).
pub const CHANGE_VERBS: &[&str] = &[
    "changed",
    "altered",
    "modified",
    "replaced",
    "swapped",
    "edited",
    "removed",
    "added",
    "enlarged",
    "shrunk",
    "shrunken",
    "moved",
    "reshaped",
    "resized",
    "retouched",
    "photoshopped",
    "manipulated",
    "exchanged",
    "transplanted",
    "pasted",
    "erased",
    "deleted",
    "widened",
    "narrowed",
    "lengthened",
    "shortened",
];

const ORIGIN_WORDS: &[&str] = &["original", "source", "real", "unedited", "unaltered", "genuine"];
const IMAGE_NOUNS: &[&str] =
    &["image", "images", "photo", "photos", "picture", "pictures", "face", "version", "one", "person", "photograph"];

/// Below this many tokens of shared 3-grams a text is compared by token sets.
pub const DUPLICATE_JACCARD: f64 = 0.8;

/// One finding: what triggered it and where (byte span in the text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub words: String,
    pub start: usize,
    pub end: usize,
}

/// Lowercase words with their byte spans (letters, digits, apostrophes).
fn words(text: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let w = c.is_alphanumeric() || c == '\'';
        match (w, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((text[s..i].to_lowercase(), s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((text[s..].to_lowercase(), s, text.len()));
    }
    out
}

/// Findings of language that needs the original image (see the module documentation), in text
/// order, overlapping ones merged.
pub fn original_references(text: &str) -> Vec<Finding> {
    let w = words(text);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let seq = |i: usize, phrase: &[&str]| phrase.iter().enumerate().all(|(k, p)| w.get(i + k).is_some_and(|x| x.0 == *p));
    let phrases: Vec<Vec<&str>> = ORIGINAL_PHRASES.iter().map(|p| p.split(' ').collect()).collect();
    for i in 0..w.len() {
        for p in &phrases {
            if seq(i, p) {
                spans.push((i, i + p.len() - 1));
            }
        }
        // auxiliary + (adverb) + change verb
        if AUXILIARIES.contains(&w[i].0.as_str()) {
            for gap in 1..=2 {
                if let Some(v) = w.get(i + gap)
                    && CHANGE_VERBS.contains(&v.0.as_str())
                    && (gap == 1 || w[i + 1].0.ends_with("ly"))
                {
                    spans.push((i, i + gap));
                }
            }
        }
        // "the original face", "than (the) real"
        if ORIGIN_WORDS.contains(&w[i].0.as_str()) {
            if w.get(i + 1).is_some_and(|n| IMAGE_NOUNS.contains(&n.0.as_str())) {
                spans.push((i, i + 1));
            }
            let than = |k: usize| w.get(k).is_some_and(|x| x.0 == "than");
            if i >= 1 && than(i - 1) {
                spans.push((i - 1, i));
            } else if i >= 2 && w[i - 1].0 == "the" && than(i - 2) {
                spans.push((i - 2, i));
            }
        }
    }
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in spans {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
        .into_iter()
        .map(|(a, b)| {
            let (start, end) = (w[a].1, w[b].2);
            Finding { words: text[start..end].to_string(), start, end }
        })
        .collect()
}

fn shingles(text: &str) -> BTreeSet<String> {
    let t = tokens(text).into_iter().filter(|t| t.chars().any(char::is_alphanumeric)).collect::<Vec<_>>();
    if t.len() < 3 {
        return t.into_iter().collect();
    }
    t.windows(3).map(|w| w.join(" ")).collect()
}

/// A near-duplicate: the other annotation, its similarity and a few shared 3-grams.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Duplicate {
    pub id: uuid::Uuid,
    pub similarity: f64,
    pub shared: Vec<String>,
    pub excerpt: String,
}

/// The annotator's other annotations (`others`: id and text) nearly identical to `text`, most
/// similar first.
pub fn near_duplicates(text: &str, others: &[(uuid::Uuid, String)]) -> Vec<Duplicate> {
    let a = shingles(text);
    if a.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Duplicate> = others
        .iter()
        .filter_map(|(id, t)| {
            let b = shingles(t);
            let union = a.union(&b).count();
            let shared: Vec<String> = a.intersection(&b).cloned().collect();
            let similarity = if union == 0 { 0.0 } else { shared.len() as f64 / union as f64 };
            (similarity >= DUPLICATE_JACCARD).then(|| Duplicate {
                id: *id,
                similarity,
                shared: shared.into_iter().take(5).collect(),
                excerpt: t.chars().take(160).collect(),
            })
        })
        .collect();
    out.sort_by(|x, y| y.similarity.total_cmp(&x.similarity).then(x.id.cmp(&y.id)));
    out
}

/// Regions named but not predicted, and predicted but not named (each sorted).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Disagreement {
    pub named_not_predicted: Vec<String>,
    pub predicted_not_named: Vec<String>,
}

impl Disagreement {
    pub fn size(&self) -> usize {
        self.named_not_predicted.len() + self.predicted_not_named.len()
    }
}

pub fn disagreement<A: AsRef<str>, B: AsRef<str>>(named: &[A], predicted: &[B]) -> Disagreement {
    let n: BTreeSet<&str> = named.iter().map(AsRef::as_ref).collect();
    let p: BTreeSet<&str> = predicted.iter().map(AsRef::as_ref).collect();
    Disagreement {
        named_not_predicted: n.difference(&p).map(|s| s.to_string()).collect(),
        predicted_not_named: p.difference(&n).map(|s| s.to_string()).collect(),
    }
}

/// What the risk score counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RiskInputs {
    pub fp_flags: usize,
    pub original_refs: usize,
    pub duplicates: usize,
    pub disagreement: usize,
    pub active_seconds: f64,
    pub min_seconds: f64,
}

/// The risk score (see the module documentation) and its reasons, for people.
pub fn risk(r: &RiskInputs) -> (f64, Vec<String>) {
    let mut score = 0.0;
    let mut why = Vec::new();
    let mut add = |w: f64, n: usize, what: &str| {
        if n > 0 {
            score += w * n as f64;
            why.push(format!("{n} {what}"));
        }
    };
    add(2.0, r.fp_flags, "false-positive flag(s)");
    add(3.0, r.original_refs, "reference(s) to the original");
    add(3.0, r.duplicates, "near-duplicate(s)");
    add(1.0, r.disagreement, "region(s) disagreeing with the model");
    if r.active_seconds < 1.5 * r.min_seconds {
        score += 2.0;
        why.push(format!("short active time ({:.0} s)", r.active_seconds));
    }
    (score, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<String> {
        original_references(text).into_iter().map(|f| f.words).collect()
    }

    #[test]
    fn references_to_the_original_are_found_with_their_words() {
        assert_eq!(found("The nose is wider compared to the original."), vec!["compared to the original"]);
        assert_eq!(found("Her lips look fuller than before"), vec!["than before"]);
        assert_eq!(found("The left eye was changed and the chin has been altered."), vec!["was changed", "been altered"]);
        assert_eq!(found("The mouth was slightly modified"), vec!["was slightly modified"]);
        assert_eq!(found("The eyebrows no longer match"), vec!["no longer"]);
        assert_eq!(found("Unlike the original face, the skin is smooth"), vec!["Unlike the original face"]);
        assert_eq!(found("skin darker than the real one"), vec!["than the real one"]);
        assert_eq!(found("The hair got replaced"), vec!["got replaced"]);
        let f = original_references("A nose that was REPLACED.");
        assert_eq!((f[0].start, f[0].end, f[0].words.as_str()), (12, 24, "was REPLACED"));
    }

    #[test]
    fn near_misses_are_not_findings() {
        for t in [
            "The skin lacks original texture around the cheeks.",
            "The eyes look altered in colour and blurred.",
            "The mouth seems changed: its edges are smeared.",
            "An unoriginal, plastic look on the forehead.",
            "A changed expression with blurry teeth.",
            "The real problem is the jagged jaw line.",
            "Edges were blurred and the lips were smooth.",
        ] {
            assert!(found(t).is_empty(), "{t}: {:?}", found(t));
        }
    }

    #[test]
    fn near_duplicates_by_shingles() {
        let a = uuid::Uuid::from_u128(1);
        let b = uuid::Uuid::from_u128(2);
        let others = vec![
            (a, "The left eye is blurred and the nose has a smeared texture.".to_string()),
            (b, "The chin looks sharp but the hair is painted.".to_string()),
        ];
        let d = near_duplicates("The left eye is blurred and the nose has a smeared texture!", &others);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].id, a);
        assert!((d[0].similarity - 1.0).abs() < 1e-12);
        assert!(d[0].shared.contains(&"and the nose".to_string()));
        assert!(near_duplicates("The left eye is blurred and the mouth shows a colour shift near the teeth.", &others).is_empty());
    }

    #[test]
    fn disagreement_both_ways_and_risk() {
        let d = disagreement(&["eye", "nose"], &["nose", "lip", "chin"]);
        assert_eq!(d.named_not_predicted, vec!["eye"]);
        assert_eq!(d.predicted_not_named, vec!["chin", "lip"]);
        assert_eq!(d.size(), 3);
        let (s, why) =
            risk(&RiskInputs { fp_flags: 1, original_refs: 1, duplicates: 0, disagreement: 3, active_seconds: 70.0, min_seconds: 60.0 });
        assert_eq!(s, 2.0 + 3.0 + 3.0 + 2.0);
        assert_eq!(why.len(), 4);
        let (s, why) = risk(&RiskInputs { active_seconds: 200.0, min_seconds: 60.0, ..Default::default() });
        assert_eq!((s, why.len()), (0.0, 0));
    }
}
