//! The root crate's parts and what each may not touch (ARCHITECTURE.md, "Parts"): a part's
//! files may not name the parts above it. Fails with the file, line and the forbidden path.

use std::path::Path;

/// (folder under src/, the parts it may not use)
const RULES: &[(&str, &[&str])] = &[
    ("storage", &["dataset", "jobs", "web", "devtools", "app"]),
    ("dataset", &["jobs", "web", "devtools"]),
    ("jobs", &["web", "devtools"]),
    ("web", &["devtools"]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The paths a line names as `crate::PART` or `mmtt::PART` (comments skipped).
fn named_parts(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    let mut parts = Vec::new();
    for prefix in ["crate::", "mmtt::"] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            parts.push(name);
        }
    }
    parts
}

#[test]
fn parts_do_not_reach_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (folder, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        assert!(!files.is_empty(), "src/{folder} has no Rust files: update the rules with the layout");
        for f in files {
            let text = std::fs::read_to_string(&f).expect("readable source");
            for (n, line) in text.lines().enumerate() {
                for part in named_parts(line) {
                    if forbidden.contains(&part.as_str()) {
                        violations.push(format!("{}:{}: src/{folder} may not use `{part}`: {}", f.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_a_violation() {
    assert_eq!(named_parts("use crate::web::auth; // crate::jobs"), vec!["web".to_string()]);
    assert_eq!(named_parts("let x = mmtt::devtools::demo::run();"), vec!["devtools".to_string()]);
    assert!(named_parts("use mmtt_generators::registry::Method;").is_empty());
}
