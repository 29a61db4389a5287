//! Annotation text rules shared by the server and the page.
//!
//! Word count (the rule the page's `static/annotate.js` mirrors): a word is a maximal run of
//! non-whitespace characters that contains at least one letter or digit. So "eye-brow" is one
//! word, "blurry ," is one word (the lone comma is not), and numbers count.
//!
//! Region labels: the authors' 21-label extractor (spec section 7), case-insensitive whole-word
//! matching of the synonyms, kept bit-for-bit as the reference mode.

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

/// Why a submission is refused.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
pub enum TextError {
    #[error("the explanation is empty: describe what looks fake")]
    Empty,
    #[error("the explanation has {0} words; at most 120 are allowed")]
    TooLong(usize),
}

/// Checks the text rules (not the time rule, which needs the task).
pub fn check_text(text: &str) -> Result<usize, TextError> {
    let n = word_count(text);
    if n == 0 {
        return Err(TextError::Empty);
    }
    if n > MAX_WORDS {
        return Err(TextError::TooLong(n));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

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
