//! The crate's layers (ARCHITECTURE.md's table): calls go down, never up.
//!
//! Reads every file under `src/` and fails when a module of one layer names
//! a module of a higher one (`crate::<module>`, in a `use` or inline), or a
//! crate-root re-export of one. Test code may reach anything: files declared
//! as `#[cfg(test)] mod name;`, inline `#[cfg(test)] mod name { .. }`
//! blocks, and single `#[cfg(test)]` items are skipped. Comments (doc links
//! included) are not imports and are skipped too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module (or leaf file) and its layer: the shared leaves
/// first, then L0 `format` up to L5 `client`, and the listener
/// `server` above them all.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("config", 0),
    ("types", 0),
    ("clock", 0),
    ("metrics", 0),
    ("timeline", 0),
    ("format", 1),
    ("storage", 2),
    ("log", 3),
    ("inspect", 3),
    ("replica", 4),
    ("cluster", 5),
    ("client", 6),
    // The bridge to a real Kafka cluster (feature `kafka`): on top, nothing uses it.
    ("bridge", 7),
    // The Kafka protocol listener (feature `server`): on top of everything.
    ("server", 7),
];

/// Known exceptions: (file, module it may name, why).
const ALLOWED: &[(&str, &str, &str)] = &[(
    "config.rs",
    "format",
    "LogConfig checks max.message.bytes against the batch overhead constant",
)];

fn layer_of(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The directory a module file's children live in: `a/mod.rs` → `a/`,
/// `a/b.rs` → `a/b/`.
fn children_dir(file: &Path) -> PathBuf {
    let parent = file.parent().expect("parent");
    match file.file_stem().and_then(|s| s.to_str()) {
        Some("mod" | "lib") => parent.to_path_buf(),
        Some(stem) => parent.join(stem),
        None => parent.to_path_buf(),
    }
}

/// The code of `text` that is not test-only and not a comment, line by
/// line; also the child modules declared as `#[cfg(test)] mod name;`.
fn production_lines(text: &str) -> (Vec<&str>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = Vec::new();
    let mut test_children = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line == "#[cfg(test)]" {
            let indent = lines[i].len() - lines[i].trim_start().len();
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            let item = next
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = item.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                test_children.push(name.trim().to_string());
                i += 2;
                continue;
            }
            if item.starts_with("mod ") && next.ends_with('{') {
                // Skip to the block's closing brace at the same indent.
                let close = format!("{}}}", " ".repeat(indent));
                let mut j = i + 2;
                while j < lines.len() && lines[j] != close {
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            // A single test-only item: skip its first line (a `use`).
            i += 2;
            continue;
        }
        if !line.starts_with("//") {
            kept.push(lines[i]);
        }
        i += 1;
    }
    (kept, test_children)
}

/// Crate-root re-exports (`pub use a::b::{X, Y}` in `lib.rs`): name → the
/// module they come from.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut exports = BTreeMap::new();
    let mut statement = String::new();
    for line in lib.lines() {
        let line = line.trim();
        if statement.is_empty() && !line.starts_with("pub use ") {
            continue;
        }
        statement.push_str(line);
        statement.push(' ');
        if !line.ends_with(';') {
            continue;
        }
        let body = statement
            .trim()
            .trim_start_matches("pub use ")
            .trim_end_matches(';')
            .to_string();
        statement.clear();
        let module = body.split("::").next().unwrap_or_default().to_string();
        if layer_of(&module).is_none() {
            continue;
        }
        let names = match (body.find('{'), body.rfind('}')) {
            (Some(open), Some(close)) => body[open + 1..close].to_string(),
            _ => body.rsplit("::").next().unwrap_or_default().to_string(),
        };
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            exports.insert(name.to_string(), module.clone());
        }
    }
    exports
}

/// The modules a line names through `crate::`: `crate::log::Log`,
/// `crate::{log, format}` and root re-exports such as `crate::Partition`.
fn named_modules(line: &str, exports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if preceded {
            continue; // `mycrate::`, not `crate::`
        }
        let mut heads = Vec::new();
        if let Some(group) = after.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            heads.extend(inner.split(',').map(|p| ident(p.trim())));
        } else {
            heads.push(ident(after));
        }
        for head in heads {
            if layer_of(&head).is_some() {
                found.insert(head);
            } else if let Some(module) = exports.get(&head) {
                found.insert(module.clone());
            }
        }
    }
    found
}

#[test]
fn no_module_names_a_higher_layer() {
    let root = src();
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("lib.rs");
    let exports = root_exports(&lib);
    assert!(
        exports.get("Consumer").is_some_and(|m| m == "client"),
        "lib.rs's re-exports were not understood: {exports:?}"
    );
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    // Test-only files: declared `#[cfg(test)] mod name;`, and all below them.
    let mut test_only: Vec<PathBuf> = Vec::new();
    let mut texts = BTreeMap::new();
    for file in &all {
        let text = std::fs::read_to_string(file).expect("source file");
        let (_, children) = production_lines(&text);
        for child in children {
            let dir = children_dir(file);
            test_only.push(dir.join(format!("{child}.rs")));
            test_only.push(dir.join(&child));
        }
        texts.insert(file.clone(), text);
    }
    let mut violations = Vec::new();
    let mut checked = 0;
    for (file, text) in &texts {
        let relative = file.strip_prefix(&root).expect("under src");
        if relative == Path::new("lib.rs") || test_only.iter().any(|t| file.starts_with(t)) {
            continue;
        }
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a path")
            .trim_end_matches(".rs");
        let Some(own) = layer_of(top) else {
            violations.push(format!("{}: module {top} has no layer", relative.display()));
            continue;
        };
        checked += 1;
        let (lines, _) = production_lines(text);
        for line in lines {
            for module in named_modules(line, &exports) {
                let layer = layer_of(&module).expect("a layered module");
                let allowed = ALLOWED
                    .iter()
                    .any(|(f, m, _)| Path::new(f) == relative && *m == module);
                if layer > own && !allowed {
                    violations.push(format!(
                        "{} ({top}) names {module}: {}",
                        relative.display(),
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} files checked");
    assert!(
        violations.is_empty(),
        "lower layers name higher ones:\n{}",
        violations.join("\n")
    );
}

/// The checker itself: it sees imports, inline paths, groups and root
/// re-exports, and skips comments and test code.
#[test]
fn the_checker_sees_what_it_must() {
    let exports = BTreeMap::from([("Consumer".to_string(), "client".to_string())]);
    let names = |line: &str| named_modules(line, &exports);
    assert_eq!(
        names("use crate::client::assignor::Subscription;"),
        ["client".to_string()].into()
    );
    assert_eq!(
        names("let x = crate::Consumer::new();"),
        ["client".to_string()].into()
    );
    assert_eq!(
        names("use crate::{log::Log, storage::Storage};"),
        ["log".to_string(), "storage".to_string()].into()
    );
    assert!(names("use mycrate::client::X;").is_empty());
    let text = "use crate::a;\n// use crate::client::X;\n#[cfg(test)]\nuse crate::client::Y;\n\
                #[cfg(test)]\nmod tests {\n    use crate::client::Z;\n}\n#[cfg(test)]\nmod more;\n\
                use crate::b;\n";
    let (lines, children) = production_lines(text);
    assert_eq!(lines, ["use crate::a;", "use crate::b;"]);
    assert_eq!(children, ["more"]);
}
