//! Meteor 1.5's English text normalizer (`-norm`: tokenize, normalize punctuation, keep it),
//! rule for rule, so that the aligner sees the same words as the Java scorer.
//!
//! Java's `\s`, `\p{Digit}` and `\p{Lower}` are ASCII classes; the letter ranges are Meteor's own.
//! Replacements run left to right without overlap, as `Matcher.replaceAll` does.

use regex::Regex;
use rustc_hash::FxHashMap as HashMap;
use std::sync::OnceLock;

/// A rule's pattern, compiled on first use: most captions never trigger most rules.
pub struct Rule {
    pattern: String,
    re: OnceLock<Regex>,
}

impl Rule {
    fn new(pattern: impl Into<String>) -> Self {
        Rule { pattern: pattern.into(), re: OnceLock::new() }
    }
    fn get(&self) -> &Regex {
        // the patterns are constants: a failure is a bug in this file, caught by every test
        self.re.get_or_init(|| Regex::new(&self.pattern).unwrap_or_else(|e| panic!("bad normalizer pattern {}: {e}", self.pattern)))
    }
}

impl std::ops::Deref for Rule {
    type Target = Regex;
    fn deref(&self) -> &Regex {
        self.get()
    }
}

const ALPHA: &str = r"A-Za-z\x{160}\x{17d}\x{161}\x{17e}\x{178}\x{c0}-\x{d6}\x{d8}-\x{f6}\x{f8}-\x{17e}\x{400}-\x{4ff}\x{500}-\x{527}\x{a640}-\x{a66e}\x{a67e}-\x{a697}\x{1d00}-\x{1d7f}";

/// Compiled rules plus the nonbreaking-prefix list (`nonbreaking/english.prefixes` in the jar:
/// 1 = always nonbreaking, 2 = nonbreaking before a number).
pub struct Normalizer {
    sep_other: Rule,
    multi_dot: Rule,
    multi_dot2: Rule,
    comma: Rule,
    comma2: Rule,
    comma3: Rule,
    quote_norm: Rule,
    quote_norm2: Rule,
    rm_dash: Rule,
    cont_en: Rule,
    cont_en2: Rule,
    cont_en3: Rule,
    cont_en4: Rule,
    cont_en5: Rule,
    nbp1: Rule,
    nbp2: Rule,
    nbp3: Rule,
    white: Rule,
    prefixes: HashMap<String, u8>,
}

fn re(s: &str) -> Rule {
    Rule::new(s)
}

impl Normalizer {
    /// `prefixes`: the text of `nonbreaking/english.prefixes`.
    pub fn new(prefixes: &str) -> Self {
        let alnum = format!("0-9{ALPHA}");
        let mut map = HashMap::default();
        for line in prefixes.lines() {
            let mut t = line.split(is_java_space).filter(|s| !s.is_empty());
            let Some(first) = t.next() else { continue };
            if first.starts_with('#') {
                continue;
            }
            let kind = if t.next() == Some("#NUMERIC_ONLY#") { 2 } else { 1 };
            map.insert(first.to_string(), kind);
        }
        Normalizer {
            sep_other: re(&format!(r"([^{alnum} \t\n\x0B\x0C\r.'`,\-\x{{2018}}\x{{2019}}])")),
            multi_dot: re(r"\.(\.+)"),
            multi_dot2: re(r"DOTMULTI\.([^.])"),
            comma: re(r"([^0-9]),([^0-9])"),
            comma2: re(r"([0-9]),([^0-9])"),
            comma3: re(r"([^0-9]),([0-9])"),
            quote_norm: re(r"[`\x{2018}\x{2019}]"),
            quote_norm2: re(r"[\x{201c}\x{201d}]|''"),
            rm_dash: re(&format!(r"([{alnum}.])-([{alnum}])")),
            cont_en: re(&format!(r"([^{ALPHA}])'([^{ALPHA}])")),
            cont_en2: re(&format!(r"([^{ALPHA}0-9])'([{ALPHA}])")),
            cont_en3: re(&format!(r"([{ALPHA}])'([^{ALPHA}])")),
            cont_en4: re(&format!(r"([{ALPHA}])'([{ALPHA}])")),
            cont_en5: re(r"([0-9])'(s)"),
            nbp1: re(&format!(r"[{ALPHA}]")),
            nbp2: re(r"^[a-z]"),
            nbp3: re(r"^[0-9]+"),
            white: re(r"[ \x{a0}\x{2000}-\x{200a}\x{202f}\x{205f}\x{3000}]+"),
            prefixes: map,
        }
    }

    /// `Normalizer.normalizeLine(line, english, keepPunctuation = true)`.
    pub fn normalize(&self, line: &str) -> String {
        // ASCII letters, digits and blanks: no rule applies (pycocoevalcap's tokenized text
        // mostly is this), the words come back joined by single spaces
        if line.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0C)) {
            return java_tokens(line).collect::<Vec<_>>().join(" ");
        }
        // each rule runs only where its trigger character occurs (a rule cannot match without it)
        let has = |s: &str, cs: &[char]| s.contains(cs);
        let mut s = format!(" {line} ");
        let plain = |c: char| {
            c.is_ascii_alphanumeric()
                || matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r' | '.' | '\'' | '`' | ',' | '-' | '\u{2018}' | '\u{2019}')
        };
        if !s.chars().all(plain) {
            s = self.sep_other.replace_all(&s, " ${1} ").into_owned();
        }
        if s.contains("..") {
            s = self.multi_dot.replace_all(&s, " DOTMULTI${1}").into_owned();
        }
        while s.contains("DOTMULTI.") {
            s = self.multi_dot2.replace_all(&s, "DOTDOTMULTI ${1}").replace("DOTMULTI.", "DOTDOTMULTI");
        }
        if s.contains(',') {
            for r in [&*self.comma, &*self.comma2, &*self.comma3] {
                s = r.replace_all(&s, "${1} , ${2}").into_owned();
            }
        }
        if has(&s, &['`', '\u{2018}', '\u{2019}']) {
            s = self.quote_norm.replace_all(&s, "'").into_owned();
        }
        if has(&s, &['\u{201c}', '\u{201d}']) || s.contains("''") {
            s = self.quote_norm2.replace_all(&s, " \" ").into_owned();
        }
        if has(&s, &['\u{2013}', '-']) {
            s = s.replace('\u{2013}', "-").replace("--", "-");
            s = self.rm_dash.replace_all(&s, "${1} ${2}").into_owned();
        }
        if s.contains('\'') {
            for r in [&*self.cont_en, &*self.cont_en2, &*self.cont_en3] {
                s = r.replace_all(&s, "${1} ' ${2}").into_owned();
            }
            for r in [&*self.cont_en4, &*self.cont_en5] {
                s = r.replace_all(&s, "${1} '${2}").into_owned();
            }
        }
        let toks: Vec<&str> = java_tokens(&s).collect();
        let mut out = String::with_capacity(s.len() + 8);
        for (j, tok) in toks.iter().enumerate() {
            match tok.strip_suffix('.') {
                Some(sub) if tok.len() > 1 => {
                    let kind = self.prefixes.get(sub).copied();
                    let next = toks.get(j + 1);
                    if sub.contains('.') && self.nbp1.is_match(sub) {
                        out.push_str(&tok.replace('.', ""));
                    } else if kind == Some(1)
                        || next.is_some_and(|n| self.nbp2.is_match(n))
                        || (kind == Some(2) && next.is_some_and(|n| self.nbp3.is_match(n)))
                    {
                        out.push_str(tok);
                    } else {
                        out.push_str(sub);
                        out.push_str(" .");
                    }
                }
                _ => out.push_str(tok),
            }
            out.push(' ');
        }
        while out.contains("DOTDOTMULTI") {
            out = out.replace("DOTDOTMULTI", "DOTMULTI.");
        }
        let out = out.replace("DOTMULTI", ".");
        let out = self.white.replace_all(&out, " ");
        java_trim(&out).to_string()
    }
}

/// `java.util.StringTokenizer`'s default delimiters.
pub fn is_java_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0C')
}

/// The tokens `new StringTokenizer(s)` yields.
pub fn java_tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_java_space).filter(|t| !t.is_empty())
}

/// `String.trim()`: drops every char up to U+0020 at both ends.
pub fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Normalizer {
        Normalizer::new("Mr\nDr\n#comment\nNo #NUMERIC_ONLY#\n")
    }

    #[test]
    fn splits_punctuation_as_meteor_does() {
        let n = n();
        assert_eq!(n.normalize("the eye's \"shine\" isn't right, it's fake."), "the eye 's \" shine \" isn 't right , it 's fake .");
        assert_eq!(n.normalize("Mr. Smith said no."), "Mr. Smith said no .");
        assert_eq!(n.normalize("wait... what"), "wait ... what");
        assert_eq!(n.normalize("U.S. style"), "US style");
        assert_eq!(n.normalize("over-smoothed 1,000 pixels"), "over smoothed 1,000 pixels");
        assert_eq!(n.normalize("No. 5 and No. x"), "No. 5 and No. x");
        assert_eq!(n.normalize("No. 5 and No. X"), "No. 5 and No . X");
        assert_eq!(n.normalize("  "), "");
    }
}
