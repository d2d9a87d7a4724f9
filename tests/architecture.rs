//! Architecture invariants that a reviewer should not have to remember:
//! storage knows nothing of HTTP, gRPC or SQLite; `unsafe` lives only in the mmap
//! module and every block says why it is sound; front ends do not touch storage
//! internals directly.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Lines of code with comments stripped (good enough for `//` comments).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn storage_imports_no_http_grpc_or_sqlite() {
    let files = rust_files(&src().join("storage"));
    assert!(files.len() >= 8, "storage module not found");
    for f in files {
        for (n, line) in code_lines(&f) {
            for banned in [
                "axum",
                "tonic",
                "rusqlite",
                "arrow_flight",
                "crate::http",
                "crate::flight",
                "crate::registry",
                "crate::query",
            ] {
                assert!(
                    !line.contains(banned),
                    "{}:{n} uses {banned}: storage must not know it",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn unsafe_only_in_the_mmap_module_and_always_justified() {
    let mmap = src().join("storage").join("mmap.rs");
    let mut blocks = 0;
    for f in rust_files(&src()) {
        let text = fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !code.contains("unsafe {")
                && !code.contains("unsafe fn")
                && !code.contains("unsafe impl")
            {
                continue;
            }
            assert_eq!(
                f,
                mmap,
                "{}:{} uses unsafe outside storage/mmap.rs",
                f.display(),
                i + 1
            );
            let justified = lines[i.saturating_sub(8)..i]
                .iter()
                .any(|l| l.trim_start().starts_with("// SAFETY:"));
            assert!(
                justified,
                "{}:{} unsafe block without a // SAFETY: comment",
                f.display(),
                i + 1
            );
            blocks += 1;
        }
    }
    assert!(
        blocks >= 1,
        "expected the mmap module's unsafe blocks to be found"
    );
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    assert!(
        lib.contains("#![deny(unsafe_code)]"),
        "lib.rs must deny unsafe code by default"
    );
}

#[test]
fn front_ends_do_not_reach_into_storage_internals() {
    for dir in ["http", "flight"] {
        let path = src().join(dir);
        if !path.is_dir() {
            continue;
        }
        for f in rust_files(&path) {
            for (n, line) in code_lines(&f) {
                assert!(
                    !line.contains("storage::fsio") && !line.contains("storage::recover"),
                    "{}:{n}: front ends must not reach into storage internals",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn lib_rs_opens_with_a_module_map_naming_every_module() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    assert!(lib.contains("# Layout"));
    for line in lib.lines().filter(|l| l.starts_with("pub mod ")) {
        let name = line.trim_start_matches("pub mod ").trim_end_matches(';');
        assert!(
            lib.contains(&format!("[`{name}`]")),
            "module {name} missing from the lib.rs layout map"
        );
    }
}
