//! The rules of the house (design.md), checked by reading the imports of `src/`: data flows one way, HTTP
//! edge → service → custody → kms, and service → store; every layer sees `model/`.
//!
//! Every path a file names through `crate::` or `super::` (in `use` declarations, braces expanded, and inline
//! paths alike; comments skipped) is resolved to the top-level module it reaches, and checked against the
//! table below. Test modules are held to the same rules: a layer's tests go through the layers it may see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A layer (a directory of `src/`, or one file) and the top-level modules it must never reach.
const RULES: &[(&str, &[&str], &str)] = &[
    ("api", &["store", "kms", "custody", "datadir"], "the edge sees the service and the model, never what is below"),
    ("custody", &["store", "service", "api"], "custody seals and opens; it never touches the store"),
    ("kms", &["custody", "service", "store", "api"], "kms takes bytes and an EncryptionContext; custody → kms only"),
    ("service", &["api"], "the service knows no HTTP"),
    ("store", &["service", "custody", "kms", "api", "keypair"], "the store holds bytes"),
    ("keypair", &["store", "service", "custody", "kms", "api", "config"], "key material is pure"),
    ("model", &["store", "service", "custody", "kms", "api", "config", "keypair"], "the model is shared by all"),
];

#[test]
fn no_layer_imports_what_design_md_forbids() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, forbidden, why) in RULES {
        for file in rust_files(&src.join(layer)).into_iter().chain(single_file(&src, layer)) {
            let module = module_path(&src, &file);
            let text = std::fs::read_to_string(&file).expect("read source");
            for reached in reached_modules(&module, &text) {
                if forbidden.contains(&reached.as_str()) {
                    let shown = file.strip_prefix(&src).unwrap_or(&file).display().to_string();
                    violations.push(format!("src/{shown} reaches `{reached}`: {why}"));
                }
            }
        }
    }
    assert!(violations.is_empty(), "layer rules broken:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_grouped_relative_and_inline_paths() {
    let text = "use crate::{model::Keypair, store::{Space, record}};\n\
                // use crate::kms; (a comment)\n\
                let url = \"http://x\"; // crate::custody in a comment\n\
                fn f() { super::super::config::load(); crate::service::backup::export(); }\n";
    let reached = reached_modules(&["api".into(), "nova".into()], text);
    assert_eq!(reached, BTreeSet::from(["model".into(), "store".into(), "config".into(), "service".into()]));
}

/// The module path of a source file: `src/api/auth/aksk.rs` → `[api, auth, aksk]`; `mod.rs` names its dir.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> =
        relative.with_extension("").iter().map(|part| part.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// The top-level modules of the crate that `text` (the source of `module`) names.
fn reached_modules(module: &[String], text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(strip_comment).collect::<Vec<_>>().join("\n");
    let mut reached = BTreeSet::new();
    for path in paths(&code) {
        let mut segments = path.split("::").map(str::trim).filter(|s| !s.is_empty());
        let first = segments.next();
        let target = match first {
            Some("crate") => segments.next().map(str::to_owned),
            Some("super") => {
                // The file's own module is `module`; each `super` goes one up from it.
                let mut depth = 1;
                let mut rest = segments.peekable();
                while rest.peek() == Some(&"super") {
                    rest.next();
                    depth += 1;
                }
                let base = &module[..module.len().saturating_sub(depth)];
                base.first().cloned().or_else(|| rest.next().map(str::to_owned))
            }
            _ => None,
        };
        if let Some(target) = target.filter(|t| t.chars().all(|c| c.is_ascii_lowercase() || c == '_')) {
            reached.insert(target);
        }
    }
    reached
}

/// Every `crate::…` or `super::…` path in `code`, with `use` braces expanded into their leading segment
/// (`crate::{a::X, b}` gives `crate::a::X` and `crate::b`).
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(root).map(|i| i + from) {
            from = at + root.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[at..];
            let mut head = String::new();
            for (i, c) in rest.char_indices() {
                if c == '{' {
                    for item in split_group(&rest[i + 1..]) {
                        found.push(format!("{head}{item}"));
                    }
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == ':') {
                    found.push(head.clone());
                    break;
                }
                head.push(c);
            }
        }
    }
    found
}

/// The top-level items of a `{…}` group (text starts after the `{`), each trimmed.
fn split_group(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current).trim().to_owned());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current.trim().to_owned());
    items.retain(|item| !item.is_empty() && item != "self");
    items
}

/// A line without its `//` comment (a `//` inside a string literal is kept).
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        if c == '"' && previous != '\\' {
            in_string = !in_string;
        }
        if !in_string && c == '/' && previous == '/' {
            return &line[..i - 1];
        }
        previous = c;
    }
    line
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `src/<layer>.rs`, for a layer that is one file.
fn single_file(src: &Path, layer: &str) -> Option<PathBuf> {
    Some(src.join(format!("{layer}.rs"))).filter(|p| p.is_file())
}
