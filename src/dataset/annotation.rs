//! Annotation text rules shared by the server and the page.
//!
//! Word count (the rule the page's `static/annotate.js` mirrors): a word is a maximal run of
//! non-whitespace characters that contains at least one letter or digit. So "eye-brow" is one
//! word, "blurry ," is one word (the lone comma is not), and numbers count.
//!
//! Region labels: the authors' 21-label extractor (spec section 7), case-insensitive whole-word
//! matching of the synonyms, kept bit-for-bit as the reference mode.
//!
//! Also here: the region chips of the annotation and review pages ([`chips`], [`parse_regions`]),
//! the false-positive rule ([`false_positive_labels`], [`manipulated_parts`]) and the bounds of
//! every stored text ([`check_stored`]). Pure rules over text and masks: the web handlers, the
//! synthetic seeder and the importers call them; this module never touches requests or sessions.

use serde::Serialize;

/// At most this many words (paper: at most 120 words).
pub const MAX_WORDS: usize = 120;

pub fn word_count(text: &str) -> usize {
    text.split_whitespace().filter(|w| w.chars().any(char::is_alphanumeric)).count()
}

/// The 21 labels and their synonyms, in the release's order.
pub const REGION_LABELS: [(&str, &[&str]); 21] = [
    ("eye", &["eye", "eyes", "ocular", "optic", "vision"]),
    ("pupil", &["pupil", "pupils"]),
    ("lip", &["lip", "lips", "labium", "labia"]),
    ("mouth", &["mouth", "mouths", "oral cavity", "buccal"]),
    ("nose", &["nose", "noses", "nasal", "nostril", "nostrils"]),
    ("ear", &["ear", "ears", "auricle", "pinna", "pinnae"]),
    ("cheek", &["cheek", "cheeks", "buccal", "malar"]),
    ("forehead", &["forehead", "frontal", "brow", "brows"]),
    ("chin", &["chin", "chins", "mentum"]),
    ("jaw", &["jaw", "jaws", "mandible", "maxilla"]),
    ("eyebrow", &["eyebrow", "eyebrows"]),
    ("tooth", &["tooth", "teeth", "dentition"]),
    ("tongue", &["tongue", "tongues", "glossa", "lingua"]),
    ("beard", &["beard", "beards", "facial hair"]),
    ("mustache", &["mustache", "mustaches", "moustache", "moustaches"]),
    ("skin", &["skin", "derma", "epidermis", "cutis"]),
    ("hair", &["hair", "hairs", "locks", "tresses", "strands"]),
    ("wrinkle", &["wrinkle", "wrinkles", "line", "lines", "crease", "creases"]),
    ("freckle", &["freckle", "freckles", "lentigo", "lentigines"]),
    ("scar", &["scar", "scars", "cicatrix", "cicatrices"]),
    ("dimple", &["dimple", "dimples", "fossa", "fossae"]),
];

fn is_word_char(c: char) -> bool {
    // Python's \b for str patterns: word characters are Unicode alphanumerics and underscore
    c.is_alphanumeric() || c == '_'
}

/// Whether `phrase` occurs in `lower` (already lowercased) between word boundaries.
fn contains_word(lower: &str, phrase: &str) -> bool {
    let mut start = 0;
    while let Some(pos) = lower[start..].find(phrase) {
        let i = start + pos;
        let j = i + phrase.len();
        let before = lower[..i].chars().next_back().is_none_or(|c| !is_word_char(c));
        let after = lower[j..].chars().next().is_none_or(|c| !is_word_char(c));
        if before && after {
            return true;
        }
        start = i + lower[i..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The labels a text mentions, in the release's order.
pub fn region_labels(text: &str) -> Vec<&'static str> {
    let lower = text.to_lowercase();
    REGION_LABELS.iter().filter(|(_, syn)| syn.iter().any(|s| contains_word(&lower, s))).map(|(l, _)| *l).collect()
}

/// The 21-dimensional 0/1 vector of the release.
pub fn multilabel(text: &str) -> [u8; 21] {
    let found = region_labels(text);
    let mut v = [0u8; 21];
    for (i, (l, _)) in REGION_LABELS.iter().enumerate() {
        v[i] = found.contains(l) as u8;
    }
    v
}

/// An explanation (submitted or edited by a reviewer) has at most this many characters: 120
/// words of ordinary length fit several times over.
pub const MAX_TEXT_CHARS: usize = 2_000;
/// A draft has at most this many bytes (far beyond 120 words).
pub const MAX_DRAFT_BYTES: usize = 20_000;
/// A reviewer's comment has at most this many characters.
pub const MAX_COMMENT_CHARS: usize = 2_000;

/// Why a text cannot be stored.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
pub enum StoredTextError {
    #[error("the {field} contains a NUL character (U+0000), which cannot be stored: remove it and send again")]
    Nul { field: &'static str },
    #[error("the {field} has {got} characters; at most {max} are allowed: shorten it")]
    TooManyChars { field: &'static str, got: usize, max: usize },
    #[error("the {field} has {got} bytes; at most {max} are allowed: shorten it")]
    TooManyBytes { field: &'static str, got: usize, max: usize },
}

/// Checks that `text` can be stored as the field named `field`: no NUL character (PostgreSQL's
/// text cannot hold one) and at most `max_chars` characters. Cheap on any input: the length is
/// checked on bytes first.
pub fn check_stored(field: &'static str, text: &str, max_chars: usize) -> Result<(), StoredTextError> {
    // a char is at most 4 bytes: more bytes than that are too many characters whatever they are
    if text.len() > max_chars.saturating_mul(4) || text.chars().count() > max_chars {
        return Err(StoredTextError::TooManyChars { field, got: text.chars().count(), max: max_chars });
    }
    if text.contains('\0') {
        return Err(StoredTextError::Nul { field });
    }
    Ok(())
}

/// Checks a draft: at most [`MAX_DRAFT_BYTES`] bytes, no NUL.
pub fn check_draft(text: &str) -> Result<(), StoredTextError> {
    if text.len() > MAX_DRAFT_BYTES {
        return Err(StoredTextError::TooManyBytes { field: "draft", got: text.len(), max: MAX_DRAFT_BYTES });
    }
    if text.contains('\0') {
        return Err(StoredTextError::Nul { field: "draft" });
    }
    Ok(())
}

/// At most `max` characters of `s` for echoing in a message, with an ellipsis when cut.
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Why a submission is refused.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
pub enum TextError {
    #[error("the explanation is empty: describe what looks fake")]
    Empty,
    #[error("the explanation has {0} words; at most 120 are allowed")]
    TooLong(usize),
    #[error(transparent)]
    Stored(#[from] StoredTextError),
}

/// Checks the text rules (not the time rule, which needs the task): storable (see
/// [`check_stored`], at most [`MAX_TEXT_CHARS`]), not empty, at most [`MAX_WORDS`] words.
pub fn check_text(text: &str) -> Result<usize, TextError> {
    check_stored("explanation", text, MAX_TEXT_CHARS)?;
    let n = word_count(text);
    if n == 0 {
        return Err(TextError::Empty);
    }
    if n > MAX_WORDS {
        return Err(TextError::TooLong(n));
    }
    Ok(n)
}

/// One of the 21 region chips on a page.
pub struct Chip {
    pub label: &'static str,
    pub on: bool,
    pub suggested: bool,
}

/// All 21 chips, `chosen` switched on, the text's suggestions marked.
pub fn chips(text: &str, chosen: &[&str]) -> Vec<Chip> {
    let suggested = region_labels(text);
    REGION_LABELS.iter().map(|(l, _)| Chip { label: l, on: chosen.contains(l), suggested: suggested.contains(l) }).collect()
}

/// A region value that is not one of the 21 labels.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown region label `{value}`: use one of {}", REGION_LABELS.iter().map(|(l, _)| *l).collect::<Vec<_>>().join(", "))]
pub struct UnknownRegion {
    /// The value (at most 40 characters of it).
    pub value: String,
}

/// Parses chosen region labels; each must be one of the 21. In the release's order, without
/// repeats.
pub fn parse_regions<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<&'static str>, UnknownRegion> {
    let mut out: Vec<&'static str> = Vec::new();
    for v in values {
        let label =
            REGION_LABELS.iter().map(|(l, _)| *l).find(|l| *l == v.trim()).ok_or_else(|| UnknownRegion { value: excerpt(v, 40) })?;
        if !out.contains(&label) {
            out.push(label);
        }
    }
    out.sort_by_key(|l| REGION_LABELS.iter().position(|(x, _)| x == l));
    Ok(out)
}

/// The known labels among `values`, ignoring the rest (to show a refused form's chips again).
pub fn known_regions<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'static str> {
    parse_regions(values.into_iter().filter(|v| REGION_LABELS.iter().any(|(l, _)| *l == v.trim()))).unwrap_or_default()
}

/// Share of a part's pixels inside the mask above which the part counts as manipulated.
pub const MANIPULATED_SHARE: f64 = 0.05;

/// The facial parts a region label refers to.
pub fn label_parts(label: &str) -> &'static [&'static str] {
    match label {
        "eye" | "pupil" => &["l_eye", "r_eye"],
        "lip" => &["u_lip", "l_lip"],
        "mouth" | "tooth" | "tongue" => &["mouth", "u_lip", "l_lip"],
        "nose" => &["nose"],
        "ear" => &["l_ear", "r_ear"],
        "eyebrow" => &["l_brow", "r_brow"],
        "hair" => &["hair"],
        // cheek, forehead, chin, jaw, beard, mustache, skin, wrinkle, freckle, scar, dimple
        _ => &["skin"],
    }
}

/// False-positive flags: labels the text mentions or the chips carry none of whose parts
/// ([`label_parts`]) was manipulated, in the release's order.
pub fn false_positive_labels(text: &str, chips: &[&str], manipulated: &[String]) -> Vec<&'static str> {
    let mentioned = region_labels(text);
    REGION_LABELS
        .iter()
        .map(|(l, _)| *l)
        .filter(|l| mentioned.contains(l) || chips.contains(l))
        .filter(|l| !label_parts(l).iter().any(|p| manipulated.iter().any(|m| m == p)))
        .collect()
}

/// Whether at least [`MANIPULATED_SHARE`] of `part`'s pixels lie inside `mask`.
pub fn part_manipulated(part: &image::GrayImage, mask: &image::GrayImage) -> bool {
    let (mut n, mut inside) = (0u64, 0u64);
    for (p, m) in part.pixels().zip(mask.pixels()) {
        if p.0[0] > 0 {
            n += 1;
            inside += u64::from(m.0[0] > 0);
        }
    }
    n > 0 && inside as f64 / n as f64 >= MANIPULATED_SHARE
}

/// The parts of the forgery's source with at least [`MANIPULATED_SHARE`] of their pixels masked,
/// sorted.
pub async fn manipulated_parts(
    pool: &sqlx::PgPool,
    store: &dyn crate::storage::store::BlobStore,
    forgery: uuid::Uuid,
) -> anyhow::Result<Vec<String>> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT sp.part, sp.mask_hash, f.mask_hash FROM forgeries f JOIN source_parts sp ON sp.source_id = f.target_id WHERE f.id = $1",
    )
    .bind(forgery)
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else { return Ok(vec![]) };
    let get = |h: String| -> anyhow::Result<image::GrayImage> {
        let k: crate::storage::store::BlobKey = h.parse().map_err(|_| anyhow::anyhow!("bad blob key `{h}` in the database"))?;
        let bytes = store.get(&k)?;
        Ok(mmtt_generators::mask::decode_mask_png(&bytes, mmtt_generators::FACE_SIZE)?)
    };
    let mask = get(first.get(2))?;
    let mut out = Vec::new();
    for r in &rows {
        if part_manipulated(&get(r.get(1))?, &mask) {
            out.push(r.get::<String, _>(0));
        }
    }
    out.sort();
    Ok(out)
}

/// Splits `text` into (segment, flagged) runs, flagging the words of the given labels.
pub fn highlight(text: &str, flagged: &[&str]) -> Vec<(String, bool)> {
    let words: Vec<String> =
        REGION_LABELS.iter().filter(|(l, _)| flagged.contains(l)).flat_map(|(_, syn)| syn.iter().map(|s| s.to_string())).collect();
    let mut out: Vec<(String, bool)> = Vec::new();
    for token in text.split_inclusive(char::is_whitespace) {
        let core: String = token.trim().trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        let hit = !core.is_empty() && words.contains(&core);
        match out.last_mut() {
            Some((s, f)) if *f == hit => s.push_str(token),
            _ => out.push((token.to_string(), hit)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_regions_outside_the_manipulated_parts() {
        let manipulated = vec!["l_eye".to_string(), "nose".to_string()];
        let text = "The left eye is blurry and the hair has a seam; the nostrils are fine.";
        assert_eq!(false_positive_labels(text, &[], &manipulated), vec!["hair"]);
        // a chip counts like a mention; chips on manipulated parts are not flagged
        assert_eq!(false_positive_labels(text, &["ear", "eye"], &manipulated), vec!["ear", "hair"]);
        let h = highlight(text, &["hair"]);
        assert!(h.iter().any(|(s, f)| *f && s.trim() == "hair"));
        assert_eq!(h.iter().map(|(s, _)| s.as_str()).collect::<String>(), text);
    }

    #[test]
    fn stored_texts_are_bounded_and_nul_free() {
        assert!(check_text("the eye\0 is odd").unwrap_err().to_string().contains("NUL"));
        let long = "a".repeat(MAX_TEXT_CHARS + 1);
        assert!(matches!(check_text(&long), Err(TextError::Stored(StoredTextError::TooManyChars { .. }))));
        assert!(check_draft(&"x".repeat(MAX_DRAFT_BYTES + 1)).is_err());
        assert!(check_draft("fine").is_ok());
        assert_eq!(excerpt("abcdef", 3), "abc...");
        let e = parse_regions(["eye", &"z".repeat(1000)]).unwrap_err();
        assert!(e.value.len() < 50, "{e}");
        assert_eq!(known_regions(["nose", "bogus", "eye"]), vec!["eye", "nose"]);
    }

    #[test]
    fn words() {
        assert_eq!(word_count("  The left eye-brow is blurry , and 2 lines .  "), 8);
        assert_eq!(word_count(""), 0);
        assert_eq!(word_count(" , . ! "), 0);
        assert_eq!(check_text(&"word ".repeat(121)), Err(TextError::TooLong(121)));
        assert_eq!(check_text(&"word ".repeat(120)), Ok(120));
    }

    #[test]
    fn labels_match_whole_words_only() {
        assert_eq!(region_labels("The eyebrow looks odd"), vec!["eyebrow"]);
        assert_eq!(region_labels("Her BROW and the Eyes; nostrils flared"), vec!["eye", "nose", "forehead"]);
        assert_eq!(region_labels("buccal area"), vec!["mouth", "cheek"]);
        // "hair" is a whole word inside "facial hair": the reference extractor counts both
        assert_eq!(region_labels("facial hair, oral cavity"), vec!["mouth", "beard", "hair"]);
        assert!(region_labels("eyeliner").is_empty());
        assert_eq!(multilabel("skin")[15], 1);
    }
}
