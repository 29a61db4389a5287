//! Model-assisted annotation's measures (issue 17), shared by the annotation page, the review
//! checks and the dashboard: the token-level edit distance between a suggestion and the
//! submitted text, the held-out control arm, and region agreement.
//!
//! - Tokens: lowercased runs of letters, digits and apostrophes; every other visible character is
//!   a token of its own; whitespace separates. "The lips' edge, blurred." is `the lips' edge ,
//!   blurred .`.
//! - [`token_edit_distance`]: Levenshtein over tokens (insert, delete, substitute: 1 each).
//! - [`in_holdout`]: a forgery's arm, a pure function of (forgery id, seed, fraction), so every
//!   server and every query agrees without storing it per forgery.

use uuid::Uuid;

/// The tokens of `text` (see the module documentation).
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || c == '\'' || c == '\u{2019}' {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() && !c.is_control() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Levenshtein distance over token sequences.
pub fn token_edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    if a.is_empty() {
        return b.len();
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// How a submitted text relates to the suggestion it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditMeasure {
    pub suggestion_tokens: usize,
    pub text_tokens: usize,
    /// Token-level edit distance from the suggestion to the text.
    pub edit_distance: usize,
}

impl EditMeasure {
    pub fn of(suggestion: &str, text: &str) -> EditMeasure {
        let (s, t) = (tokens(suggestion), tokens(text));
        EditMeasure { suggestion_tokens: s.len(), text_tokens: t.len(), edit_distance: token_edit_distance(&s, &t) }
    }

    /// The share of the submitted text that came from the suggestion: 1 - distance / max(len),
    /// in [0, 1] (1: submitted unchanged; 0: nothing kept). Empty both: 1.
    pub fn kept_share(&self) -> f64 {
        kept_share(self.suggestion_tokens, self.text_tokens, self.edit_distance)
    }
}

/// [`EditMeasure::kept_share`] from stored columns.
pub fn kept_share(suggestion_tokens: usize, text_tokens: usize, edit_distance: usize) -> f64 {
    let n = suggestion_tokens.max(text_tokens);
    if n == 0 { 1.0 } else { (1.0 - edit_distance as f64 / n as f64).clamp(0.0, 1.0) }
}

/// Whether `forgery` is in the held-out (unassisted) arm: the first 8 bytes of
/// SHA-256(seed as little-endian i64 ‖ the id's 16 bytes), as a fraction of 2^64, below `fraction`.
pub fn in_holdout(forgery: Uuid, seed: i64, fraction: f64) -> bool {
    use sha2::{Digest, Sha256};
    if fraction <= 0.0 {
        return false;
    }
    if fraction >= 1.0 {
        return true;
    }
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(forgery.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) as f64 / 18_446_744_073_709_551_616.0) < fraction
}

/// Region agreement: the Jaccard index of two label sets (1 when both are empty).
pub fn region_agreement<A: AsRef<str>, B: AsRef<str>>(a: &[A], b: &[B]) -> f64 {
    use std::collections::BTreeSet;
    let a: BTreeSet<&str> = a.iter().map(AsRef::as_ref).collect();
    let b: BTreeSet<&str> = b.iter().map(AsRef::as_ref).collect();
    let union = a.union(&b).count();
    if union == 0 { 1.0 } else { a.intersection(&b).count() as f64 / union as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenises_words_and_punctuation() {
        assert_eq!(tokens("The lips' edge, blurred."), vec!["the", "lips'", "edge", ",", "blurred", "."]);
        assert_eq!(tokens("  Eye-brow\tLOOKS\n"), vec!["eye", "-", "brow", "looks"]);
        assert!(tokens(" \n ").is_empty());
    }

    #[test]
    fn edit_distance_on_known_inputs() {
        let m = EditMeasure::of("the lips are blurred", "the lips are blurred");
        assert_eq!((m.suggestion_tokens, m.text_tokens, m.edit_distance), (4, 4, 0));
        assert_eq!(m.kept_share(), 1.0);
        // one substitution, one insertion
        let m = EditMeasure::of("the lips are blurred", "the lips look blurred and smooth");
        assert_eq!((m.suggestion_tokens, m.text_tokens, m.edit_distance), (4, 6, 3));
        assert!((m.kept_share() - 0.5).abs() < 1e-12);
        assert_eq!(EditMeasure::of("", "new text here").edit_distance, 3);
        assert_eq!(EditMeasure::of("a b c", "").edit_distance, 3);
        assert_eq!(token_edit_distance(&["k", "i", "t", "t", "e", "n"], &["s", "i", "t", "t", "i", "n", "g"]), 3);
    }

    #[test]
    fn holdout_is_deterministic_and_near_its_fraction() {
        let ids: Vec<Uuid> = (0..4000u128).map(Uuid::from_u128).collect();
        let n = ids.iter().filter(|id| in_holdout(**id, 17, 0.2)).count();
        assert!((700..=900).contains(&n), "{n} of 4000 held out at 0.2");
        assert!(ids.iter().all(|id| in_holdout(*id, 17, 0.2) == in_holdout(*id, 17, 0.2)));
        let other = ids.iter().filter(|id| in_holdout(**id, 17, 0.2) != in_holdout(**id, 18, 0.2)).count();
        assert!(other > 400, "the seed changes the arms");
        assert!(!in_holdout(ids[0], 17, 0.0) && in_holdout(ids[0], 17, 1.0));
    }

    #[test]
    fn agreement() {
        assert_eq!(region_agreement(&["eye", "nose"], &["nose", "lip"]), 1.0 / 3.0);
        assert_eq!(region_agreement::<&str, &str>(&[], &[]), 1.0);
        assert_eq!(region_agreement(&["eye"], &[] as &[&str]), 0.0);
    }
}
