//! The code's own rules that no compiler checks: a function outside tests longer than
//! [`LONGEST_FN_LINES`] says why beside it, in a `// Long: …` comment above it; and no read
//! uses sea-orm's `.one()`, whose bound `LIMIT ?` makes SQLite prepare the statement again on
//! every run (a key lookup is `rows::ByKey::by_key`); transactions begin only in the unit of
//! work and the books' read snapshots.

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

/// Where a transaction may begin, and why: the unit of work's three openers (the runner's
/// command batches, the Stripe batches and their deferred events, `Store::write`) and the
/// read snapshots of books (`book.rs`: `load_books` under one snapshot, then commit, no write);
/// and each Stripe event's savepoint inside its batch (`outer.begin()`).
const TRANSACTION_OPENERS: [(&str, &str); 5] = [
    ("src/store/runner.rs", "engine.begin()"),
    ("src/store/stripe.rs", "engine.begin()"),
    ("src/store/stripe.rs", "outer.begin()"),
    ("src/store/unit.rs", "engine.begin()"),
    ("src/store/book.rs", "self.connection().begin()"),
];

#[test]
fn transactions_begin_only_in_the_unit_of_work() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for file in source_files() {
        let text = std::fs::read_to_string(&file).expect("a source file");
        let name = file
            .strip_prefix(root)
            .expect("under the crate")
            .display()
            .to_string();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || code.starts_with("pub async fn begin") {
                continue;
            }
            let opens = [".begin()", ".transaction(", "begin_with_config("]
                .iter()
                .any(|call| code.contains(call));
            let allowed = TRANSACTION_OPENERS
                .iter()
                .any(|(f, call)| name == *f && code.contains(call));
            if opens && !allowed {
                found.push(format!("{name}:{}: {code}", i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a write goes through the unit of work (`Store::execute`, `Store::write`, the Stripe \
         batches), never a transaction of its own:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_transaction_scan_sees_an_opener() {
    // The scan above reads what it claims to: every allowed opener is really there.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, call) in TRANSACTION_OPENERS {
        let text = std::fs::read_to_string(root.join(file)).expect("an opener's file");
        assert!(text.contains(call), "{file} opens with {call}");
    }
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

/// The module a source file is (`store::runner` for `src/store/runner.rs`, `store` for its
/// `mod.rs`, the crate root for `lib.rs`); `None` for the binary.
fn module_of(file: &Path) -> Option<Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let relative = file.strip_prefix(&src).ok()?.with_extension("");
    let mut segments: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match segments.last().map(String::as_str) {
        Some("main") if segments.len() == 1 => return None,
        Some("lib") if segments.len() == 1 => segments.clear(),
        Some("mod") => {
            segments.pop();
        }
        _ => {}
    }
    Some(segments)
}

/// The paths a file names through `crate::` and `super::` (in `use` lines, `{…}` groups
/// included, and in code), as module segments from the crate root, outside its tests.
fn named_paths(module: &[String], text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    // `super` of `store::runner` is `store`; of `store` (its `mod.rs`), the crate root.
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let mut paths = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let heads: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|item| item.trim().to_owned())
                    .filter(|item| !item.is_empty())
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                vec![rest[..end].to_owned()]
            };
            for head in heads {
                let mut path = base.clone();
                path.extend(
                    head.split("::")
                        .take_while(|s| !s.is_empty() && *s != "{")
                        .map(str::to_owned),
                );
                paths.push(path);
            }
        }
    }
    paths
}

#[test]
fn no_two_files_import_each_other_in_a_circle() {
    let files = source_files();
    let modules: Vec<(PathBuf, Vec<String>)> = files
        .iter()
        .filter_map(|f| module_of(f).map(|m| (f.clone(), m)))
        .collect();
    let known: std::collections::HashMap<Vec<String>, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, (_, m))| (m.clone(), i))
        .collect();
    let mut edges: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); modules.len()];
    for (i, (file, module)) in modules.iter().enumerate() {
        let text = std::fs::read_to_string(file).expect("a source file");
        for path in named_paths(module, &text) {
            // The longest leading part of the path that is a file of the crate.
            let target = (1..=path.len())
                .rev()
                .find_map(|n| known.get(&path[..n]).copied());
            if let Some(target) = target.filter(|&t| t != i) {
                edges[i].insert(target);
            }
        }
    }
    assert!(
        edges.iter().map(|e| e.len()).sum::<usize>() > 100,
        "the scan finds the imports there are"
    );
    // Every file from which a walk along the imports comes back to it.
    let mut circles = Vec::new();
    for start in 0..modules.len() {
        let mut seen = vec![false; modules.len()];
        let mut stack: Vec<usize> = edges[start].iter().copied().collect();
        while let Some(next) = stack.pop() {
            if next == start {
                circles.push(modules[start].1.join("::"));
                break;
            }
            if !std::mem::replace(&mut seen[next], true) {
                stack.extend(edges[next].iter().copied());
            }
        }
    }
    assert!(
        circles.is_empty(),
        "files that import themselves through others (`crate::` and `super::` paths): {circles:?}"
    );
}
