//! The code's own rules that no compiler checks: a function outside tests longer than
//! [`LONGEST_FN_LINES`] says why beside it, in a `// Long: …` comment above it; and no read
//! uses sea-orm's `.one()`, whose bound `LIMIT ?` makes SQLite prepare the statement again on
//! every run (a key lookup is `rows::ByKey::by_key`).

use std::path::{Path, PathBuf};

/// Longest function, in lines from its signature to its closing brace, that needs no reason.
const LONGEST_FN_LINES: usize = 80;

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `(name, first line, length)` of each function of `text` before its `#[cfg(test)]` module,
/// and whether a `// Long:` comment stands in the comments and attributes just above it. A
/// function ends at the first closing brace at its own indentation (rustfmt's layout).
fn long_functions(text: &str) -> Vec<(String, usize, usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let indent = line.len() - line.trim_start().len();
        let rest = line.trim_start();
        let rest = rest
            .strip_prefix("pub(crate) ")
            .or_else(|| rest.strip_prefix("pub(super) "))
            .or_else(|| rest.strip_prefix("pub "))
            .unwrap_or(rest);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(signature) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = signature
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        let Some(end) = lines[i + 1..].iter().position(|l| l.trim_end() == close) else {
            continue;
        };
        let length = end + 2;
        if length <= LONGEST_FN_LINES {
            continue;
        }
        let reasoned = lines[..i]
            .iter()
            .rev()
            .take_while(|l| {
                let t = l.trim_start();
                t.starts_with("//") || t.starts_with("#[")
            })
            .any(|l| l.trim_start().starts_with("// Long:"));
        found.push((name, i + 1, length, reasoned));
    }
    found
}

fn source_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    files.sort();
    files
}

#[test]
fn no_read_binds_its_limit_through_one() {
    let files = source_files();
    assert!(files.len() > 20, "the scan reads the sources");
    let found: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("a source file");
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.contains(".one(") && !l.trim_start().starts_with("//"))
                .map(|(i, _)| format!("{}:{}", file.display(), i + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        found.is_empty(),
        "`.one()` binds `LIMIT ?`, re-prepared by SQLite on every run; use `by_key` for a key \
         lookup:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_long_function_says_why() {
    let files = source_files();
    let mut unexplained = Vec::new();
    let mut long = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file");
        for (name, line, length, reasoned) in long_functions(&text) {
            long += 1;
            if !reasoned {
                unexplained.push(format!("{}:{line} {name} ({length} lines)", file.display()));
            }
        }
    }
    assert!(long > 0, "the scan finds the long functions there are");
    assert!(
        unexplained.is_empty(),
        "functions over {LONGEST_FN_LINES} lines with no `// Long:` reason above them:\n{}",
        unexplained.join("\n")
    );
}

#[test]
fn the_scan_tells_a_long_function_with_a_reason_from_one_without() {
    let body = "    x();\n".repeat(LONGEST_FN_LINES);
    let text = format!(
        "/// Doc.\n// Long: a table.\n#[inline]\npub fn reasoned() {{\n{body}}}\n\n\
         async fn unreasoned() {{\n{body}}}\n\nfn short() {{\n}}\n\n#[cfg(test)]\nmod tests {{\n\
         fn in_tests() {{\n{body}}}\n}}\n"
    );
    let found = long_functions(&text);
    let summary: Vec<(&str, bool)> = found.iter().map(|(n, _, _, r)| (n.as_str(), *r)).collect();
    assert_eq!(summary, vec![("reasoned", true), ("unreasoned", false)]);
    assert_eq!(found[0].2, LONGEST_FN_LINES + 2);
}
