//! The tokenization pycocoevalcap applies before every text metric: Stanford PTBTokenizer 3.4.1
//! (`-preserveLines -lowerCase`), then the removal of punctuation tokens.
//!
//! Two passes. [`unicode_pass`] first rewrites what CoreNLP's `PTBLexer` (JFlex, `%unicode`,
//! BMP only) decides character by character, checked against the 3.4.1 jar (the table in the
//! tests below): other spaces (NBSP, U+2000-U+200B, U+3000, BOM, direction marks) separate
//! words; characters no rule knows are deleted with a word break ("untokenizable": emoji and
//! every other astral-plane character, ZWJ, variation selectors, U+2010-U+2012 outside words);
//! soft hyphens vanish; en/em dashes (`SPMDASH`) become `--`, `…` becomes `...`; curly double
//! quotes and guillemets become `` `` ``/`''`, curly single quotes `` ` ``/`'` (all removed by
//! the filter), two adjacent quote characters are one token (`“‘` is ```` ``` ````, kept), and
//! `„ ‚ ‟` stay as they are (kept); `|` and the other `MISCSYMBOL`s, `¿ ¡ 。 、`, currency
//! (`€`→`$`, `£`→`#`, `¢`→`cents`) and vulgar fractions (`½`→`1/2`) stand alone and are kept.
//! Letters are Unicode letters plus the lexer's extra ranges (combining marks U+0300-U+036F,
//! Indic vowel signs, ...), so non-Latin words stay whole and are lowercased as Java does.
//!
//! Then each whitespace-free chunk is split by the rules captions meet: ASCII quotes to
//! `` `` `` / `''` (then removed); brackets to `-lrb-`, `-rrb-`, `-lsb-`, `-rsb-`, `-lcb-`,
//! `-rcb-`, which stay as words: the tokenizer lowercases them, and the reference's filter only
//! knows the uppercase forms (a quirk kept for parity); punctuation split off words: `, ; : ! ?
//! " ( ) [ ] { }`, a final `.` (not inside numbers such as `1.5` nor in abbreviations such as
//! `e.g.`), `...`; runs of hyphens (`-`, `--`, 3-4 are `--`, 5 or more stay as they are);
//! clitics split off: `n't`, `'s`, `'re`, `'ve`, `'ll`, `'d`, `'m` with `'` or `’` (`can't` ->
//! `ca n't`, `don’t` -> `do n't`, `n‘t` -> ``n`t``); the assimilations the lexer splits
//! (`cannot` -> `can not`, `gonna gotta lemme gimme wanna` -> `gon na` ..., `'tis` -> `'t is`,
//! `'twas` -> `'t was`); `'90s`, `'em`, `'til(l)`, `'cause`, `’n’` kept whole; `$`, `%`, `#` and
//! `&` separated from numbers and words; hyphens, slashes and apostrophes inside words kept.
//! A `\r` or other line separator inside a caption is a space here (the Java tool would start a
//! new line and shift every later caption: the reference misaligns, we do not).

use std::borrow::Cow;

/// Marks a token the first pass decided: emitted as it is (then filtered).
const RAW: char = '\u{E000}';

/// The lexer's additions to `[:letter:]` (its `LETTER` macro): marks and signs of other scripts.
const EXTRA_LETTERS: [(u32, u32); 67] = [
    (0x00AD, 0x00AD),
    (0x0237, 0x024F),
    (0x02C2, 0x02C5),
    (0x02D2, 0x02DF),
    (0x02E5, 0x02FF),
    (0x0300, 0x036F),
    (0x0370, 0x037D),
    (0x0384, 0x0384),
    (0x0385, 0x0385),
    (0x03CF, 0x03CF),
    (0x03F6, 0x03F6),
    (0x03FC, 0x03FF),
    (0x0483, 0x0487),
    (0x04CF, 0x04CF),
    (0x04F6, 0x04FF),
    (0x0510, 0x0525),
    (0x055A, 0x055F),
    (0x0591, 0x05BD),
    (0x05BF, 0x05BF),
    (0x05C1, 0x05C1),
    (0x05C2, 0x05C2),
    (0x05C4, 0x05C4),
    (0x05C5, 0x05C5),
    (0x05C7, 0x05C7),
    (0x0615, 0x061A),
    (0x063B, 0x063F),
    (0x064B, 0x065E),
    (0x0670, 0x0670),
    (0x06D6, 0x06EF),
    (0x06FA, 0x06FF),
    (0x070F, 0x070F),
    (0x0711, 0x0711),
    (0x0730, 0x074F),
    (0x0750, 0x077F),
    (0x07A6, 0x07B1),
    (0x07CA, 0x07F5),
    (0x07FA, 0x07FA),
    (0x0900, 0x0903),
    (0x093C, 0x093C),
    (0x093E, 0x094E),
    (0x0951, 0x0955),
    (0x0962, 0x0963),
    (0x0981, 0x0983),
    (0x09BC, 0x09C4),
    (0x09C7, 0x09C7),
    (0x09C8, 0x09C8),
    (0x09CB, 0x09CD),
    (0x09D7, 0x09D7),
    (0x09E2, 0x09E2),
    (0x09E3, 0x09E3),
    (0x0A01, 0x0A03),
    (0x0A3C, 0x0A3C),
    (0x0A3E, 0x0A4F),
    (0x0A81, 0x0A83),
    (0x0ABC, 0x0ACF),
    (0x0B82, 0x0B82),
    (0x0BBE, 0x0BC2),
    (0x0BC6, 0x0BC8),
    (0x0BCA, 0x0BCD),
    (0x0C01, 0x0C03),
    (0x0C3E, 0x0C56),
    (0x0D3E, 0x0D44),
    (0x0D46, 0x0D48),
    (0x0E30, 0x0E3A),
    (0x0E47, 0x0E4E),
    (0x0EB1, 0x0EBC),
    (0x0EC8, 0x0ECD),
];

/// Non-ASCII `MISCSYMBOL`s: each is a token of its own.
const MISC_SYMBOLS: [(u32, u32); 53] = [
    (0x00A6, 0x00A6),
    (0x00A7, 0x00A7),
    (0x00A8, 0x00A8),
    (0x00A9, 0x00A9),
    (0x00AC, 0x00AC),
    (0x00AE, 0x00AE),
    (0x00AF, 0x00AF),
    (0x00B0, 0x00BA),
    (0x00D7, 0x00D7),
    (0x00F7, 0x00F7),
    (0x0387, 0x0387),
    (0x05BE, 0x05BE),
    (0x05C0, 0x05C0),
    (0x05C3, 0x05C3),
    (0x05C6, 0x05C6),
    (0x05F3, 0x05F4),
    (0x0600, 0x0603),
    (0x0606, 0x060A),
    (0x060C, 0x060C),
    (0x0614, 0x0614),
    (0x061B, 0x061B),
    (0x061E, 0x061E),
    (0x066A, 0x066A),
    (0x066D, 0x066D),
    (0x0703, 0x070D),
    (0x07F6, 0x07F8),
    (0x0964, 0x0965),
    (0x0E4F, 0x0E4F),
    (0x1FBD, 0x1FBD),
    (0x2016, 0x2017),
    (0x2020, 0x2023),
    (0x2030, 0x2038),
    (0x203B, 0x203B),
    (0x203E, 0x2042),
    (0x2044, 0x2044),
    (0x207A, 0x207F),
    (0x208A, 0x208E),
    (0x2100, 0x214F),
    (0x2190, 0x21FF),
    (0x2200, 0x2BFF),
    (0x3012, 0x3012),
    (0x30FB, 0x30FB),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFF65),
    (0x00A1, 0x00A1),
    (0x00BF, 0x00BF),
    (0x037E, 0x037E),
    (0x0589, 0x0589),
    (0x061F, 0x061F),
    (0x06D4, 0x06D4),
    (0x3001, 0x3002),
];

fn in_ranges(c: char, ranges: &[(u32, u32)]) -> bool {
    let u = c as u32;
    ranges.iter().any(|&(a, b)| a <= u && u <= b)
}

/// A letter or digit of the lexer's words (BMP only: JFlex 1.4 reads UTF-16 units).
fn is_word_char(c: char) -> bool {
    let u = c as u32;
    if u > 0xFFFF {
        return false;
    }
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    // letter numbers (Roman numerals) are neither letters nor digits for Java
    let letter_number = (0x2160..=0x2188).contains(&u) || u == 0x3007 || (0x3021..=0x3029).contains(&u) || (0x3038..=0x303A).contains(&u);
    if letter_number {
        return false;
    }
    if in_ranges(c, &EXTRA_LETTERS) {
        return true;
    }
    if in_ranges(c, &MISC_SYMBOLS) {
        // µ º ª are letters
        return c.is_alphabetic();
    }
    c.is_alphabetic()
        || (c.is_numeric() && !(0x2150..=0x218F).contains(&u) && !(0x2070..=0x209F).contains(&u) && !(0x2460..=0x24FF).contains(&u))
}

/// How `latexQuotes` writes a quote character that is not a probable left quote.
fn latex_quote(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{2018}' | '\u{201B}' | '\u{2039}' | '\u{0091}' | '`' => "`",
        '\u{2019}' | '\u{203A}' | '\u{0092}' | '\'' => "'",
        '\u{201C}' | '\u{00AB}' | '\u{0093}' => "``",
        '\u{201D}' | '\u{00BB}' | '\u{0094}' => "''",
        '\u{201A}' => "\u{201A}",
        '\u{201E}' => "\u{201E}",
        '\u{201F}' => "\u{201F}",
        _ => return None,
    })
}

/// Non-ASCII quote characters of the lexer's `QUOTES` class.
fn is_curly_quote(c: char) -> bool {
    matches!(c, '\u{2018}'..='\u{201F}' | '\u{2039}' | '\u{203A}' | '\u{00AB}' | '\u{00BB}' | '\u{0091}'..='\u{0094}')
}

/// A combining mark the lexer counts as a letter of `WORD` but not of `THING`.
fn is_mark(c: char) -> bool {
    !c.is_alphabetic() && !c.is_numeric() && in_ranges(c, &EXTRA_LETTERS)
}

/// The first pass (see the module's doc): the text with the character-level decisions of the
/// lexer made, tokens it fixed marked [`RAW`]. ASCII text without `|` is returned as it is.
pub fn unicode_pass(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|b| b.is_ascii() && b != b'|') {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let raw = |out: &mut String, t: &str| {
        out.push(' ');
        out.push(RAW);
        out.push_str(t);
        out.push(' ');
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev_word = i > 0 && is_word_char(chars[i - 1]);
        let next_word = chars.get(i + 1).is_some_and(|&n| is_word_char(n));
        match c {
            _ if c.is_ascii() => {
                if c == '|' {
                    raw(&mut out, "|");
                } else {
                    out.push(c);
                }
            }
            // soft hyphens are removed from words; alone the lexer makes `-` (removed too)
            '\u{00AD}' => {}
            // other spaces, zero-width space, BOM, direction marks, line separators
            '\u{00A0}'
            | '\u{2000}'..='\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{3000}'
            | '\u{FEFF}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{0085}' => out.push(' '),
            // SPMDASH and the ellipsis: tokens the filter removes
            '\u{2013}' | '\u{2014}' | '\u{2015}' | '\u{0096}' | '\u{0097}' => out.push_str(" -- "),
            '\u{2026}' => out.push_str(" ... "),
            // hyphens the lexer knows only inside words (`HYPHEN` in `THING`)
            '\u{2010}' | '\u{2011}' if prev_word && next_word => out.push(c),
            _ if is_curly_quote(c) => {
                // a quote inside a word is an apostrophe (clitics, o’clock, ’90s): the second pass
                let apostrophe = matches!(c, '\u{2019}' | '\u{2018}' | '\u{201B}' | '\u{0091}' | '\u{0092}');
                let next = chars.get(i + 1).copied();
                if next.is_some_and(|n| is_curly_quote(n) || n == '`') {
                    // two quote characters in a row are one token
                    let (a, b) = (latex_quote(c).unwrap_or(""), next.and_then(latex_quote).unwrap_or(""));
                    raw(&mut out, &format!("{a}{b}"));
                    i += 2;
                    continue;
                }
                if apostrophe && (prev_word || next_word) {
                    out.push(c);
                } else if let Some(t) = latex_quote(c) {
                    raw(&mut out, t);
                }
            }
            // currency (`normalizeCurrency`) and vulgar fractions (`normalizeFractions`)
            '\u{20AC}' | '\u{00A4}' | '\u{20A0}' | '\u{0080}' => raw(&mut out, "$"),
            '\u{00A3}' => raw(&mut out, "#"),
            '\u{00A2}' => raw(&mut out, "cents"),
            '\u{00A5}' | '\u{060B}' | '\u{0E3F}' | '\u{20A4}' | '\u{FFE0}' | '\u{FFE1}' | '\u{FFE5}' | '\u{FFE6}' => {
                raw(&mut out, &c.to_string())
            }
            '\u{00BC}' => raw(&mut out, "1/4"),
            '\u{00BD}' => raw(&mut out, "1/2"),
            '\u{00BE}' => raw(&mut out, "3/4"),
            '\u{2153}' => raw(&mut out, "1/3"),
            '\u{2154}' => raw(&mut out, "2/3"),
            '\u{2155}'..='\u{215E}' => raw(&mut out, &c.to_string()),
            _ if is_word_char(c) => out.push(c),
            _ if in_ranges(c, &MISC_SYMBOLS) => raw(&mut out, &c.to_string()),
            // untokenizable: deleted (with a word break)
            _ => out.push(' '),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Tokens pycocoevalcap removes after tokenizing.
pub const PUNCTUATIONS: [&str; 17] =
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"];

/// The assimilations the lexer splits (`splitAssimilations`) when the whole word is one:
/// `cannot` -> `can not`, `gonna gotta lemme gimme wanna` -> `gon na` ...
fn split_assimilation(lower: &str) -> Option<(&str, &str)> {
    match lower {
        "cannot" => Some(("can", "not")),
        "gonna" | "gotta" | "lemme" | "gimme" | "wanna" => Some(lower.split_at(3)),
        _ => None,
    }
}

fn push_word(lower: String, out: &mut Vec<String>) {
    match split_assimilation(&lower) {
        Some((a, b)) => {
            out.push(a.to_string());
            out.push(b.to_string());
        }
        None => out.push(lower),
    }
}

/// A run of hyphens as the lexer writes it: `-`, `--`, 3 or 4 are `--`, more stay as they are.
fn hyphens(run: &str) -> String {
    if (3..=4).contains(&run.len()) { "--".into() } else { run.into() }
}

/// Splits a lowercased word before its clitic: `n't` after a word of ASCII letters not ending
/// in `n` (`SWORD/SREDAUX`; the apostrophe may be `'`, `’`, `‘`, `‛` or `` ` ``, written as
/// `latexQuotes` does), `'s 'm 'd 're 've 'll` (`WORD/REDAUX`; `'` or `’`, written `'`).
fn clitic_split(lower: &str) -> Option<(String, String)> {
    let cs: Vec<char> = lower.chars().collect();
    let n = cs.len();
    if n > 3 && cs[n - 3] == 'n' && cs[n - 1] == 't' {
        let apos = match cs[n - 2] {
            '\'' | '\u{2019}' | '\u{0092}' => Some('\''),
            '`' | '\u{2018}' | '\u{201B}' | '\u{0091}' => Some('`'),
            _ => None,
        };
        if let Some(a) = apos {
            let word = &cs[..n - 3];
            if !word.is_empty() && word.iter().all(char::is_ascii_alphabetic) && word[word.len() - 1] != 'n' {
                return Some((word.iter().collect(), format!("n{a}t")));
            }
        }
    }
    for c in ["s", "re", "ve", "ll", "d", "m", "n"] {
        let k = c.len() + 1;
        if n > k && matches!(cs[n - k], '\'' | '\u{2019}' | '\u{0092}') && cs[n - k + 1..].iter().copied().eq(c.chars()) {
            let word = &cs[..n - k];
            if word.iter().any(|ch| ch.is_alphanumeric()) {
                return Some((word.iter().collect(), format!("'{c}")));
            }
        }
    }
    None
}

/// Where a word breaks at a curly apostrophe (`’` `‘`) inside it: not where `THING` (`o’clock`,
/// `d’arc`, `l’amour`: one of `dDoOlL`, the apostrophe, two letters or more) or `APOWORD`
/// (`O’Brien`: a capital but I or Y, the apostrophe, two letters or more; a vowel, the
/// apostrophe, a lowercase vowel or a capital) keep it.
fn split_apostrophe(s: &str) -> Option<usize> {
    let (i, c) = s.char_indices().find(|&(i, c)| i > 0 && matches!(c, '\u{2019}' | '\u{2018}'))?;
    let before: Vec<char> = s[..i].chars().collect();
    let after: Vec<char> = s[i + c.len_utf8()..].chars().collect();
    if after.is_empty() {
        return None;
    }
    let letter = |c: &char| c.is_alphanumeric() && !is_mark(*c);
    let letters_after = after.iter().take_while(|c| letter(c)).count();
    let first = before[0];
    if before.len() == 1 && ("dDoOlL".contains(first) || (first.is_ascii_uppercase() && first != 'I' && first != 'Y')) && letters_after >= 2
    {
        return None;
    }
    let last = before[before.len() - 1];
    if before.iter().all(letter) && "aeiouyAEIOUY".contains(last) && ("aeiou".contains(after[0]) || after[0].is_ascii_uppercase()) {
        return None;
    }
    Some(i)
}

/// A word, its clitic and the combining marks after it (`it's̃` -> `it` `'s` `̃`).
fn marks_after_clitic(lower: &str) -> Option<((String, String), String)> {
    let start = lower.char_indices().rev().take_while(|(_, c)| is_mark(*c)).last()?.0;
    Some((clitic_split(&lower[..start])?, lower[start..].to_string()))
}

/// The length in bytes of a leading apostrophe word the lexer keeps whole (`APOWORD`,
/// `TBSPEC2`: `'90s`, `'em`, `'til(l)`, `'cause`, `'n'`, `'85` at the end) or splits after
/// `'t` (`'tis`, `'twas`, ASCII apostrophe only).
fn apostrophe_word(s: &str) -> Option<usize> {
    let a = s.chars().next()?.len_utf8();
    let rest = s[a..].to_lowercase();
    if s.starts_with('\'') && (rest.starts_with("tis") || rest.starts_with("twas")) {
        return Some(2);
    }
    let b = rest.as_bytes();
    let letter_after = |k: usize| rest[k..].chars().next().is_some_and(char::is_alphabetic);
    if b.len() >= 3 && (b'2'..=b'9').contains(&b[0]) && b[1] == b'0' && b[2] == b's' {
        return Some(a + 3);
    }
    if b.len() == 2 && b[0].is_ascii_digit() && b[1].is_ascii_digit() {
        return Some(a + 2);
    }
    for w in ["cause", "till", "til", "em"] {
        if rest.starts_with(w) && !letter_after(w.len()) {
            return Some(a + w.len());
        }
    }
    if b.first() == Some(&b'n') {
        let after = rest[1..].chars().next();
        if after.is_some_and(|c| matches!(c, '\'' | '\u{2019}' | '\u{0092}')) {
            return Some(a + 1 + after.map_or(0, char::len_utf8));
        }
        if after.is_none() {
            return Some(a + 1);
        }
    }
    None
}

/// Splits one whitespace-free chunk into PTB tokens.
fn split_chunk(chunk: &str, out: &mut Vec<String>) {
    // most words: letters and digits only, one token
    if chunk.chars().all(char::is_alphanumeric) {
        push_word(chunk.to_lowercase(), out);
        return;
    }
    let mut s: String = chunk.to_string();
    let mut tail: Vec<String> = Vec::new();
    // leading punctuation
    while let Some(c) = s.chars().next() {
        let tok = match c {
            '"' | '\u{201C}' | '\u{201D}' => Some("``".to_string()),
            '\u{2018}' | '\u{201B}' | '\u{0091}' | '`' => Some("`".to_string()),
            '\'' | '\u{2019}' | '\u{0092}' if s.len() > c.len_utf8() => {
                // words the lexer keeps with their apostrophe, or splits after it
                if let Some(n) = apostrophe_word(&s) {
                    out.push(s[..n].to_lowercase());
                    s = s[n..].to_string();
                    continue;
                }
                if c != '\'' && is_clitic_like(&s.replacen(c, "'", 1)) {
                    // `’s` alone is the clitic
                    out.push(s.replacen(c, "'", 1).to_lowercase());
                    s.clear();
                    continue;
                }
                if c == '\'' { if is_clitic_like(&s) { None } else { Some("`".to_string()) } } else { Some("'".to_string()) }
            }
            '.' if s.starts_with("...") && s.len() > 3 => {
                let run = s.bytes().take_while(|&b| b == b'.').count().min(5);
                out.push("...".into());
                s = s[run..].to_string();
                continue;
            }
            '(' => Some("-lrb-".into()),
            '[' => Some("-lsb-".into()),
            '{' => Some("-lcb-".into()),
            '$' | '#' | ',' | ';' | ':' | '!' | '?' | '%' | '&' | ')' | ']' | '}' | '*' | '<' | '>' | '=' | '+' | '@' => Some(match c {
                ')' => "-rrb-".into(),
                ']' => "-rsb-".into(),
                '}' => "-rcb-".into(),
                _ => c.to_string(),
            }),
            '-' => {
                let run = s.bytes().take_while(|&b| b == b'-').count();
                let next = s[run..].chars().next();
                if run >= 2 || next.is_some_and(char::is_alphabetic) {
                    out.push(hyphens(&s[..run]));
                    s = s[run..].to_string();
                    continue;
                }
                None
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
            // a single letter or an abbreviation keeps one of the dots (`a...` -> `a.` `.` `.`)
            let run = s.bytes().rev().take_while(|&b| b == b'.').count();
            let base = &s[..s.len() - run];
            if !base.is_empty() && is_abbreviation(&format!("{base}.")) {
                tail.extend(std::iter::repeat_n(".".to_string(), run - 1));
                s.truncate(base.len() + 1);
                continue;
            }
            tail.push("...".into());
            s.truncate(base.len());
            continue;
        }
        if s.ends_with('\u{2026}') {
            tail.push("...".into());
            s.truncate(s.len() - '\u{2026}'.len_utf8());
            continue;
        }
        let run = s.bytes().rev().take_while(|&b| b == b'-').count();
        if run >= 2 && run < s.len() {
            tail.push(hyphens(&s[s.len() - run..]));
            s.truncate(s.len() - run);
            continue;
        }
        let Some(c) = s.chars().next_back() else {
            break;
        };
        let tok: Option<String> = match c {
            '"' | '\u{201D}' | '\u{201C}' => Some("''".into()),
            '\u{2019}' | '\u{0092}' | '\'' if s.len() > c.len_utf8() => Some("'".into()),
            '\u{2018}' | '\u{201B}' | '\u{0091}' | '`' if s.len() > c.len_utf8() => Some("`".into()),
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
    // a hyphenated word with a combining mark: `THING` (letters, hyphens) and `WORD` (letters
    // and marks) compete, the longer wins
    if s.contains('-') && s.chars().any(is_mark) {
        let cs: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < cs.len() {
            let word = cs[i..].iter().take_while(|&&c| is_word_char(c)).count();
            let mut thing = cs[i..].iter().take_while(|&&c| is_word_char(c) && !is_mark(c)).count();
            while thing > 0 && cs.get(i + thing) == Some(&'-') {
                let more = cs[i + thing + 1..].iter().take_while(|&&c| is_word_char(c) && !is_mark(c)).count();
                if more == 0 {
                    break;
                }
                thing += 1 + more;
            }
            let n = word.max(thing);
            if n == 0 {
                let run = cs[i..].iter().take_while(|&&c| c == '-').count().max(1);
                out.push(hyphens(&cs[i..i + run].iter().collect::<String>()));
                i += run;
                continue;
            }
            out.push(cs[i..i + n].iter().collect::<String>().to_lowercase());
            i += n;
        }
        out.extend(tail.into_iter().rev());
        return;
    }
    // an inner run of three to five dots (`LDOTS`) separates two words
    if let Some(i) = s.find("...").filter(|&i| i > 0) {
        let run = s[i..].bytes().take_while(|&b| b == b'.').count();
        if i + run < s.len() {
            let (a, b) = (s[..i].to_string(), s[i + run..].to_string());
            if is_abbreviation(&format!("{a}.")) {
                // `a....b` -> `a.` `...` `b`
                split_chunk(&format!("{a}."), out);
            } else {
                split_chunk(&a, out);
            }
            out.push("...".into());
            split_chunk(&b, out);
            out.extend(tail.into_iter().rev());
            return;
        }
    }
    // an inner run of two or more hyphens separates two words
    if let Some(i) = s.find("--").filter(|&i| i > 0) {
        let run = s[i..].bytes().take_while(|&b| b == b'-').count();
        let (a, b) = (s[..i].to_string(), s[i + run..].to_string());
        split_chunk(&a, out);
        out.push(hyphens(&s[i..i + run]));
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
        let lower = s.to_lowercase();
        if let Some((a, b)) = clitic_split(&lower) {
            // can't -> ca n't, won't -> wo n't, don’t -> do n't
            out.push(a);
            out.push(b);
        } else if let Some((a, b)) = lower
            .rsplit_once(['\'', '\u{2019}', '\u{2018}'])
            .filter(|(a, b)| *b == "t" && a.trim_end_matches(is_mark).ends_with('n') && !a.is_ascii())
        {
            // `n’t` after a word with other letters than ASCII: no clitic, the quote stands alone
            out.push(a.to_string());
            out.push(if lower.contains('\u{2018}') { "`".into() } else { "'".into() });
            out.push(b.to_string());
        } else if let Some((a, b)) = marks_after_clitic(&lower) {
            // a mark after a clitic stands alone (`REDAUX/[^A-Za-z]`)
            out.push(a.0);
            out.push(a.1);
            out.push(b);
        } else if let Some(i) = split_apostrophe(&s) {
            // a curly apostrophe inside a word the lexer does not keep whole: a quote of its own
            let c = s[i..].chars().next().unwrap_or('\'');
            split_chunk(&s[..i], out);
            out.push(if c == '\u{2019}' { "'".into() } else { "`".into() });
            split_chunk(&s[i + c.len_utf8()..], out);
        } else {
            push_word(lower, out);
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
    matches!(
        l.as_str(),
        "mr" | "mrs" | "ms" | "dr" | "prof" | "st" | "jr" | "sr" | "vs" | "etc" | "inc" | "co" | "corp" | "ltd" | "no" | "fig" | "approx"
    ) || (body.chars().count() == 1 && body.chars().all(char::is_alphabetic))
}

/// PTB tokens of one caption, lowercased (punctuation tokens not yet removed).
pub fn ptb_tokens(text: &str) -> Vec<String> {
    let text = unicode_pass(text);
    let mut out = Vec::new();
    for chunk in text.split(|c: char| c.is_whitespace()).filter(|c| !c.is_empty()) {
        match chunk.strip_prefix(RAW) {
            Some(t) => out.push(t.to_string()),
            None => split_chunk(chunk, &mut out),
        }
    }
    out
}

/// What pycocoevalcap scores: the PTB tokens without punctuation, joined by single spaces.
pub fn tokenize(text: &str) -> String {
    let text = unicode_pass(text);
    let mut out = String::with_capacity(text.len());
    let mut buf: Vec<String> = Vec::new();
    for chunk in text.split(|c: char| c.is_whitespace()).filter(|c| !c.is_empty()) {
        // the common cases, a plain word, without allocating
        if chunk.bytes().all(|b| b.is_ascii_alphanumeric()) && !matches!(chunk.len(), 5 | 6) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(chunk.bytes().map(|b| b.to_ascii_lowercase() as char));
            continue;
        }
        // a token the first pass decided
        if let Some(t) = chunk.strip_prefix(RAW) {
            if !PUNCTUATIONS.contains(&t) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(t);
            }
            continue;
        }
        // a plain word with a final comma or period (not an abbreviation): word, then the dropped mark
        if let Some(word) = chunk.strip_suffix([',', '.'])
            && word.len() > 1
            && word.bytes().all(|b| b.is_ascii_alphabetic())
            && !is_abbreviation(chunk)
            && !matches!(word.len(), 5 | 6)
        {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(word.bytes().map(|b| b.to_ascii_lowercase() as char));
            continue;
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

    /// What the 3.4.1 jar gives (`-preserveLines -lowerCase`, then pycocoevalcap's filter),
    /// recorded with `scripts/captions_reference.py tokenize`.
    const JAR: [(&str, &str); 27] = [
        ("He said \u{201c}hello\u{201d} and \u{2018}bye\u{2019} \u{2014} ok \u{2013} fine", "he said hello and bye ok fine"),
        ("He said \u{201c}hello.\u{201d}", "he said hello"),
        (
            "don\u{2019}t won\u{2019}t can\u{2019}t it\u{2019}s they\u{2019}re I\u{2019}m I\u{2019}ll we\u{2019}ve he\u{2019}d",
            "do n't wo n't ca n't it 's they 're i 'm i 'll we 've he 'd",
        ),
        ("the eye\u{2019}s edge, the eyes\u{2019} edges", "the eye 's edge the eyes edges"),
        ("don\u{2018}t don`t", "do n`t do n`t"),
        ("\u{2018}tis \u{2019}twas 'tis 'twas 'Tis 'TWAS 'twasn't", "tis twas 't is 't was 't is 't was 't was n't"),
        (
            "Cannot CANNOT cannotx cannot. cannot, (cannot) \u{201c}cannot\u{201d} cannot's Cannot-do",
            "can not can not cannotx can not can not -lrb- can not -rrb- can not cannot 's cannot-do",
        ),
        (
            "gonna gotta lemme gimme wanna Gonna WANNA gonnabe wannabe gonna. wanna, gimme!",
            "gon na got ta lem me gim me wan na gon na wan na gonnabe wannabe gon na wan na gim me",
        ),
        ("more'n d'ye", "more 'n d'ye"),
        ("a\u{2014}b a\u{2013}b a \u{2014} b a \u{2013} b \u{2014}a b\u{2014} \u{2015} \u{2014}\u{2014}", "a b a b a b a b a b"),
        ("a--b a -- b --a b-- a---b a----b a-----b ------ - -a a-", "a b a b a b a b a b a ----- b ------ a a"),
        (
            "wait... wait\u{2026}now ...and \u{2026} x wait.... wait...... wait . . . x e.g.\u{2026} etc\u{2026}",
            "wait wait now and x wait wait wait x e.g. etc",
        ),
        ("a|b a||b a|||b ||| || | x ||| y a|||. |a|", "a | b a | | b a | | | b | | | | | | x | | | y a | | | | a |"),
        ("café naïve Ærø ß straße İstanbul ΣΣ ΟΔΟΣ", "café naïve ærø ß straße i\u{307}stanbul σς οδος"),
        (
            "Привет МИР 日本語のテキスト 한국어 عربي ह\u{93f}न\u{94d}द\u{940} שלום",
            "привет мир 日本語のテキスト 한국어 عربي ह\u{93f}न\u{94d}द\u{940} שלום",
        ),
        ("e\u{301} combining a\u{308}b \u{300}x", "e\u{301} combining a\u{308}b \u{300}x"),
        ("\u{1f600} \u{1f642} emoji\u{1f600}word \u{1f44d}\u{1f3fd} x\u{200d}y \u{2764}\u{fe0f} \u{1d400}bc", "emoji word x y \u{2764} bc"),
        ("non\u{a0}breaking a\u{2009}b a\u{3000}b a\u{202f}b a\u{200b}b a\u{feff}b a\u{200e}b", "non breaking a b a b a b a b a b a b"),
        ("soft\u{ad}hyphen \u{ad} x\u{ad}", "softhyphen x"),
        (
            "\u{ab}guillemets\u{bb} \u{2039}single\u{203a} \u{201e}low quote\u{201c} \u{201a}low\u{2018} \u{201b}reversed\u{201f}",
            "guillemets single \u{201e} low quote \u{201a} low reversed \u{201f}",
        ),
        (
            "\u{201c}\u{2018}nested\u{2019}\u{201d} \u{201c}\u{201c}double\u{201d}\u{201d} nose\u{2019}s\u{201d} eyes\u{2019}\u{201d}",
            "``` nested ''' ```` double '''' nose 's eyes '''",
        ),
        ("\u{2019}90s '90s \u{2018}90s '85 'em 'till 'cause", "\u{2019}90s '90s 90s '85 'em 'till 'cause"),
        ("o\u{2019}clock l\u{2019}amour", "o\u{2019}clock l\u{2019}amour"),
        (
            "5\u{b2} \u{bc} 3\u{bd} \u{20ac}5 \u{a3}5 \u{a2} \u{a5} \u{3002} \u{3001} a\u{3002}b \u{bf}que? \u{a1}si!",
            "5 \u{b2} 1/4 3 1/2 $ 5 # 5 cents \u{a5} \u{3002} \u{3001} a \u{3002} b \u{bf} que \u{a1} si",
        ),
        (
            "a\u{2022}b \u{2022} item \u{b7} dot \u{2122} \u{a9} \u{ae} 5\u{b0} \u{263a} \u{2713} \u{2212} 5 a\u{2212}b",
            "a \u{2022} b \u{2022} item \u{b7} dot \u{2122} \u{a9} \u{ae} 5 \u{b0} \u{263a} \u{2713} \u{2212} 5 a \u{2212} b",
        ),
        ("x\u{2010}y \u{2010} x\u{2011} \u{2012}x \u{2160} \u{2032}", "x\u{2010}y x x \u{2032}"),
        (
            "\u{201c}The nose\u{2019}s edge\u{201d}, it\u{2019}s odd\u{2026} \u{2014} isn\u{2019}t it?",
            "the nose 's edge it 's odd is n't it",
        ),
    ];

    #[test]
    fn equals_the_jar_on_unicode_punctuation_split_words_and_bars() {
        let bad: Vec<String> = JAR
            .iter()
            .filter(|(i, w)| tokenize(i) != *w)
            .map(|(i, w)| format!("{i:?}\n  jar:  {w:?}\n  mmtt: {:?}", tokenize(i)))
            .collect();
        assert!(bad.is_empty(), "{} of {} differ:\n{}", bad.len(), JAR.len(), bad.join("\n"));
    }

    #[test]
    fn ptb_tokens_keep_what_the_filter_removes() {
        assert_eq!(ptb_tokens("a\u{2014}b \u{201c}x\u{201d} |||"), ["a", "--", "b", "``", "x", "''", "|", "|", "|"]);
    }

    #[test]
    fn known_cases() {
        assert_eq!(
            tokenize("The iris shape is irregular, and this is a strong sign of editing."),
            "the iris shape is irregular and this is a strong sign of editing"
        );
        assert_eq!(tokenize("The pupils clearly show visible blending... line."), "the pupils clearly show visible blending line");
        assert_eq!(tokenize("typical of GAN-generated faces."), "typical of gan-generated faces");
        assert_eq!(
            tokenize("It doesn't match; the eye's edge (left) is 1.5 px off!"),
            "it does n't match the eye 's edge -lrb- left -rrb- is 1.5 px off"
        );
        assert_eq!(tokenize("Look at the front teeth: they fade."), "look at the front teeth they fade");
        assert_eq!(tokenize("\"Fake\" smile"), "fake smile");
    }
}
