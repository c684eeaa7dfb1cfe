//! The crate's modules form floors, and imports only point down: `resp` ← `command` ←
//! `dispatch` ← `client` ← `server`, with `cluster` and `backend` below `dispatch`. Each
//! module may name only modules on lower floors (or itself); the client layer may name only
//! `dispatch`, `resp` and `memory`. This test reads every `crate::` path in `src/` and fails on any edge
//! that points up or sideways, so the import cycle the architecture review found cannot come
//! back unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The floor of each top-level module; a module may use modules on strictly lower floors.
const FLOORS: &[(&str, u8)] = &[
    ("resp", 0),
    ("latency", 0),
    ("auth", 0),
    // Tells the allocator to return memory after a large buffer is freed (a hook main sets).
    ("memory", 0),
    // The binary's global allocator (a module of main.rs, not of the library).
    ("allocator", 0),
    ("command", 1),
    ("config", 1),
    ("tls", 2),
    ("backend", 3),
    // Who read which key for CLIENT TRACKING: plain data, handed to clients by the registry.
    ("tracking", 3),
    ("cluster", 4),
    // Every connected client and CLIENT PAUSE, shared by the workers (held by `shared`).
    ("registry", 4),
    ("shared", 5),
    ("dispatch", 7),
    // The recorder registers the label values dispatch defines (error and retry kinds).
    ("metrics", 8),
    ("client", 8),
    ("server", 9),
    ("admin", 9),
    ("reload", 10),
    // src/lib.rs: the facade that starts everything.
    ("lib", 11),
];

/// Modules that may only use a named few, whatever their floor (the client layer also tells
/// `memory` when it frees a large output buffer).
const ONLY: &[(&str, &[&str])] = &[("client", &["dispatch", "resp", "memory"])];

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/dispatch/driver.rs` → `dispatch`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("file under src");
    let first = relative
        .components()
        .next()
        .expect("non-empty path")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// Every module named by a `crate::` path in the code (comments skipped), with its line.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            if let Some(group) = name.strip_prefix('{') {
                // `crate::{a, b::c}`: every name in the group.
                let inner = rest[1..].split('}').next().unwrap_or_default();
                for part in inner.split(',') {
                    let module = part.trim().split("::").next().unwrap_or_default();
                    if !module.is_empty() {
                        found.push((number + 1, module.to_string()));
                    }
                }
                let _ = group;
            } else if !name.is_empty() {
                found.push((number + 1, name));
            }
        }
    }
    found
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "main" {
            continue; // the binary uses the library by its name, not `crate::`
        }
        let Some(own) = floor(&module) else {
            panic!(
                "{}: module '{module}' has no floor in tests/layering.rs: give it one",
                file.display()
            );
        };
        let text = std::fs::read_to_string(file).expect("readable source file");
        for (line, target) in crate_paths(&text) {
            if target == module {
                continue;
            }
            let Some(theirs) = floor(&target) else {
                // Items of lib.rs itself (`crate::Config`, `crate::StartError`) are the facade.
                if module == "lib" {
                    continue;
                }
                upward.push(format!(
                    "{}:{line}: {module} uses crate::{target} (a lib.rs item: the facade is the top floor)",
                    file.display()
                ));
                continue;
            };
            *edges.entry((module.clone(), target.clone())).or_default() += 1;
            let allowed = match ONLY.iter().find(|(m, _)| *m == module) {
                Some((_, only)) => only.contains(&target.as_str()),
                None => theirs < own,
            };
            if !allowed {
                upward.push(format!(
                    "{}:{line}: {module} (floor {own}) uses {target} (floor {theirs})",
                    file.display()
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up or sideways:\n  {}",
        upward.join("\n  ")
    );
    // The scan must see the real edges, or it could pass by finding nothing.
    for expected in [
        ("dispatch", "backend"),
        ("client", "dispatch"),
        ("cluster", "resp"),
    ] {
        assert!(
            edges.contains_key(&(expected.0.to_string(), expected.1.to_string())),
            "the scan found no {} → {} edge: is it reading src/?",
            expected.0,
            expected.1
        );
    }
}

#[test]
fn crate_paths_are_found_in_every_form() {
    let text = "use crate::resp::Value;\nuse crate::{backend::Pool, cluster};\n// crate::client in a comment\nlet x = crate::shared::Shared::new();\n";
    let found: Vec<String> = crate_paths(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["resp", "backend", "cluster", "shared"]);
}
