//! The talker's two tokenizers, read from `tokenizer.json` with the `tokenizers` crate: T5's
//! (SentencePiece unigram; appends `</s>`) for the language model and the mask branch's label
//! words, and the Q-Former's BERT WordPiece (`[CLS] ... [SEP]`). Truncation is on the left, as the
//! release sets it, and counts the special tokens as transformers does; decoding skips special
//! tokens and applies `clean_up_tokenization_spaces` when the tokenizer's config asks for it.

use super::TalkerError;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

#[derive(Clone)]
pub struct TextTokenizer {
    tok: Tokenizer,
    clean_up: bool,
    pub path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextTokenizer({})", self.path.display())
    }
}

impl TextTokenizer {
    /// `dir/tokenizer.json`, with `dir/tokenizer_config.json`'s `clean_up_tokenization_spaces`.
    pub fn from_dir(dir: &Path, what: &str) -> Result<Self, TalkerError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TalkerError::Tokenizer(format!(
                "{}: no such file; the {what} tokenizer is read from a `tokenizer.json` (save it with transformers' \
                 `tokenizer.save_pretrained(dir)`, which writes one for fast tokenizers)",
                path.display()
            )));
        }
        let tok = Tokenizer::from_file(&path).map_err(|e| TalkerError::Tokenizer(format!("{}: {e}", path.display())))?;
        let config = dir.join("tokenizer_config.json");
        let clean_up = match std::fs::read_to_string(&config) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("clean_up_tokenization_spaces").and_then(serde_json::Value::as_bool))
                .unwrap_or(false),
            Err(_) => false,
        };
        Ok(TextTokenizer { tok, clean_up, path })
    }

    /// Ids with the special tokens, at most `max_len` of them, dropping words on the left.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>, TalkerError> {
        let mut tok = self.tok.clone();
        tok.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Left,
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| TalkerError::Tokenizer(format!("{}: {e}", self.path.display())))?;
        let enc =
            tok.encode(text, true).map_err(|e| TalkerError::Tokenizer(format!("{}: cannot encode {text:?}: {e}", self.path.display())))?;
        Ok(enc.get_ids().to_vec())
    }

    /// [`Self::encode`] padded with `pad` to exactly `len` ids (`padding="max_length"`).
    pub fn encode_padded(&self, text: &str, len: usize, pad: u32) -> Result<Vec<u32>, TalkerError> {
        let mut ids = self.encode(text, len)?;
        ids.resize(len, pad);
        Ok(ids)
    }

    /// `batch_decode(skip_special_tokens=True)` of one sequence.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TalkerError> {
        let text = self.tok.decode(ids, true).map_err(|e| TalkerError::Tokenizer(format!("{}: {e}", self.path.display())))?;
        Ok(if self.clean_up { clean_up_tokenization(&text) } else { text })
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tok.token_to_id(token)
    }
}

/// transformers' `clean_up_tokenization`.
pub fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// Right-pads rows of ids with `pad`, returning the ids and the 0/1 mask.
pub fn pad_batch(rows: &[Vec<u32>], pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<u8>>) {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    let ids = rows.iter().map(|r| r.iter().copied().chain(std::iter::repeat_n(pad, len - r.len())).collect()).collect();
    let mask = rows.iter().map(|r| std::iter::repeat_n(1u8, r.len()).chain(std::iter::repeat_n(0u8, len - r.len())).collect()).collect();
    (ids, mask)
}
