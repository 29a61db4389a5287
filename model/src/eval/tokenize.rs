//! The tokenization pycocoevalcap applies before every text metric: Stanford PTBTokenizer 3.4.1
//! (`-preserveLines -lowerCase`), then the removal of punctuation tokens.
//!
//! The rules implemented (the ones captions meet): lowercasing; splitting on whitespace; ASCII
//! and typographic quotes to `` `` `` / `''` (then removed); brackets to `-lrb-`, `-rrb-`,
//! `-lsb-`, `-rsb-`, `-lcb-`, `-rcb-`, which stay as words: the tokenizer lowercases them, and the
//! reference's filter only knows the uppercase forms (a quirk kept for parity); punctuation
//! split off words: `, ; : ! ? " ( ) [ ] { }`, a final `.` (not inside numbers such as `1.5`
//! nor in abbreviations such as `e.g.`), `...` and `…`; clitics split off: `n't`, `'s`, `'re`,
//! `'ve`, `'ll`, `'d`, `'m` (`can't` -> `ca n't`, `won't` -> `wo n't`); `$`, `%`, `#` and `&`
//! separated from numbers and words; hyphens, slashes and apostrophes inside words kept.
//! A `\r` or other line separator inside a caption is a space here (the Java tool would start a
//! new line and shift every later caption: the reference misaligns, we do not).

/// Tokens pycocoevalcap removes after tokenizing.
pub const PUNCTUATIONS: [&str; 17] = ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"];

fn is_clitic_boundary(lower: &str) -> Option<usize> {
    // returns the byte index where a clitic starts
    for c in ["n't", "'s", "'re", "'ve", "'ll", "'d", "'m"] {
        if lower.len() > c.len() && lower.ends_with(c) {
            let i = lower.len() - c.len();
            if lower[..i].chars().any(char::is_alphanumeric) {
                return Some(i);
            }
        }
    }
    None
}

/// Splits one whitespace-free chunk into PTB tokens.
fn split_chunk(chunk: &str, out: &mut Vec<String>) {
    // most words: letters and digits only, one token
    if chunk.chars().all(char::is_alphanumeric) {
        out.push(chunk.to_lowercase());
        return;
    }
    let mut s: String = chunk.to_string();
    let mut tail: Vec<String> = Vec::new();
    // leading punctuation
    loop {
        let Some(c) = s.chars().next() else { break };
        let tok = match c {
            '"' | '\u{201C}' | '\u{201D}' => Some("``".to_string()),
            '\u{2018}' | '`' => Some("`".to_string()),
            '(' => Some("-lrb-".into()),
            '[' => Some("-lsb-".into()),
            '{' => Some("-lcb-".into()),
            '$' | '#' | ',' | ';' | ':' | '!' | '?' | '%' | '&' | ')' | ']' | '}' | '*' | '<' | '>' | '=' | '+' | '@' => {
                Some(match c {
                    ')' => "-rrb-".into(),
                    ']' => "-rsb-".into(),
                    '}' => "-rcb-".into(),
                    _ => c.to_string(),
                })
            }
            '\'' if s.len() > 1 && !is_clitic_like(&s) => Some("`".to_string()),
            '-' if s.starts_with("--") => {
                out.push("--".into());
                s = s[2..].to_string();
                continue;
            }
            _ => None,
        };
        match tok {
            Some(t) => {
                out.push(t);
                s = s[c.len_utf8()..].to_string();
            }
            None => break,
        }
    }
    // trailing punctuation
    loop {
        // a run of ? and ! is one token ("?!"), a single one is "?" or "!"
        let run = s.chars().rev().take_while(|c| *c == '?' || *c == '!').count();
        if run > 1 && run < s.chars().count() {
            let cut = s.len() - run;
            tail.push(s[cut..].to_string());
            s.truncate(cut);
            continue;
        }
        if s.ends_with("...") && s.len() > 3 {
            tail.push("...".into());
            s.truncate(s.len() - 3);
            continue;
        }
        if s.ends_with('\u{2026}') {
            tail.push("...".into());
            s.truncate(s.len() - '\u{2026}'.len_utf8());
            continue;
        }
        if s.ends_with("--") && s.len() > 2 {
            tail.push("--".into());
            s.truncate(s.len() - 2);
            continue;
        }
        let Some(c) = s.chars().next_back() else { break };
        let tok: Option<String> = match c {
            '"' | '\u{201D}' | '\u{201C}' => Some("''".into()),
            '\u{2019}' | '\'' if s.len() > 1 => Some("'".into()),
            ')' => Some("-rrb-".into()),
            ']' => Some("-rsb-".into()),
            '}' => Some("-rcb-".into()),
            ',' | ';' | ':' | '!' | '?' | '%' | '&' | '*' | '<' | '>' | '=' | '+' | '@' | '#' | '$' => Some(c.to_string()),
            '.' if s.len() > 1 && !is_abbreviation(&s) => Some(".".into()),
            '.' if s.len() == 1 => Some(".".into()),
            '-' if s.len() > 1 => Some("-".into()),
            _ => None,
        };
        match tok {
            Some(t) => {
                tail.push(t);
                s.truncate(s.len() - c.len_utf8());
            }
            None => break,
        }
    }
    // an inner "--" separates two words
    if let Some(i) = s.find("--").filter(|&i| i > 0 && i + 2 < s.len()) {
        let (a, b) = (s[..i].to_string(), s[i + 2..].to_string());
        split_chunk(&a, out);
        out.push("--".into());
        split_chunk(&b, out);
        out.extend(tail.into_iter().rev());
        return;
    }
    // a decimal number runs into a unit: "3.5mm" -> "3.5" "mm"
    if let Some(i) = decimal_prefix(&s).filter(|&i| i < s.len() && s[i..].chars().all(char::is_alphabetic)) {
        out.push(s[..i].to_string());
        out.push(s[i..].to_lowercase());
        out.extend(tail.into_iter().rev());
        return;
    }
    if !s.is_empty() {
        let lower = s.to_lowercase().replace('\u{2019}', "'");
        if let Some(i) = is_clitic_boundary(&lower) {
            let (a, b) = lower.split_at(i);
            // can't -> ca n't, won't -> wo n't
            out.push(a.to_string());
            out.push(b.to_string());
        } else {
            out.push(lower);
        }
    }
    out.extend(tail.into_iter().rev());
}

/// The length of a leading decimal number with a fractional part (`3.5`), if any.
fn decimal_prefix(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 || b.get(int) != Some(&b'.') {
        return None;
    }
    let frac = b[int + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
    (frac > 0).then_some(int + 1 + frac)
}

fn is_clitic_like(s: &str) -> bool {
    let l = s.to_lowercase();
    ["'s", "'re", "'ve", "'ll", "'d", "'m"].iter().any(|c| l == *c)
}

/// A word ending in `.` that keeps it: single letters and dotted abbreviations (`e.g.`, `u.s.`),
/// and common title abbreviations.
fn is_abbreviation(s: &str) -> bool {
    let body = &s[..s.len() - 1];
    if body.contains('.') && body.chars().all(|c| c.is_alphabetic() || c == '.') {
        return true;
    }
    let l = body.to_lowercase();
    matches!(l.as_str(), "mr" | "mrs" | "ms" | "dr" | "prof" | "st" | "jr" | "sr" | "vs" | "etc" | "inc" | "co" | "corp" | "ltd" | "no" | "fig" | "approx")
        || (body.chars().count() == 1 && body.chars().all(char::is_alphabetic))
}

/// PTB tokens of one caption, lowercased (punctuation tokens not yet removed).
pub fn ptb_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in text.split(|c: char| c.is_whitespace()) {
        if !chunk.is_empty() {
            split_chunk(chunk, &mut out);
        }
    }
    // a sentence-internal period before the last token stays attached in PTB only at the end;
    // "word." followed by more text is still split (handled per chunk above)
    out
}

/// What pycocoevalcap scores: the PTB tokens without punctuation, joined by single spaces.
pub fn tokenize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut buf: Vec<String> = Vec::new();
    for chunk in text.split(|c: char| c.is_whitespace()).filter(|c| !c.is_empty()) {
        // the common cases, a plain word, without allocating
        if chunk.bytes().all(|b| b.is_ascii_alphanumeric()) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(chunk.bytes().map(|b| b.to_ascii_lowercase() as char));
            continue;
        }
        // a plain word with a final comma or period (not an abbreviation): word, then the dropped mark
        if let Some(word) = chunk.strip_suffix([',', '.']) {
            if word.len() > 1 && word.bytes().all(|b| b.is_ascii_alphabetic()) && !is_abbreviation(chunk) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.extend(word.bytes().map(|b| b.to_ascii_lowercase() as char));
                continue;
            }
        }
        buf.clear();
        split_chunk(chunk, &mut buf);
        for t in &buf {
            if !PUNCTUATIONS.contains(&t.as_str()) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cases() {
        assert_eq!(tokenize("The iris shape is irregular, and this is a strong sign of editing."), "the iris shape is irregular and this is a strong sign of editing");
        assert_eq!(tokenize("The pupils clearly show visible blending... line."), "the pupils clearly show visible blending line");
        assert_eq!(tokenize("typical of GAN-generated faces."), "typical of gan-generated faces");
        assert_eq!(tokenize("It doesn't match; the eye's edge (left) is 1.5 px off!"), "it does n't match the eye 's edge -lrb- left -rrb- is 1.5 px off");
        assert_eq!(tokenize("Look at the front teeth: they fade."), "look at the front teeth they fade");
        assert_eq!(tokenize("\"Fake\" smile"), "fake smile");
    }
}
