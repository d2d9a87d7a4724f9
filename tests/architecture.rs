//! Architecture invariants that a reviewer should not have to remember:
//! storage knows nothing of HTTP, gRPC or SQLite; `unsafe` lives only in the mmap
//! module and every block says why it is sound; front ends do not touch storage
//! internals directly; admin changes the store only through storage operations and
//! does not depend on the query layer that calls it.

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
                    !line.contains("storage::fsio")
                        && !line.contains("storage::recover")
                        && !line.contains("storage::maintain"),
                    "{}:{n}: front ends must not reach into storage internals",
                    f.display()
                );
            }
        }
    }
}

/// Replicas sit above storage and below the servers: `object_store` appears only in
/// `src/replica` (and the config check that calls it), storage never sees it, and the
/// replica module does not depend on the query layer, the front ends or SQLite: it
/// works on a `Store` and is driven by `server`.
#[test]
fn object_storage_stays_in_the_replica_module() {
    for f in rust_files(&src()) {
        let in_replica = f.starts_with(src().join("replica"));
        for (n, line) in code_lines(&f) {
            if line.contains("object_store") {
                assert!(
                    in_replica,
                    "{}:{n}: object storage belongs to src/replica",
                    f.display()
                );
            }
            if in_replica {
                for banned in [
                    "crate::query",
                    "crate::http",
                    "crate::flight",
                    "rusqlite",
                    "crate::registry",
                ] {
                    assert!(
                        !line.contains(banned),
                        "{}:{n}: the replica module must not use {banned}",
                        f.display()
                    );
                }
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

/// Admin used to write manifests and sidecars itself (through `fsio`, `recover` and
/// `Series::commit_manifest`), bumping versions by hand, committing without the write
/// path's rollback and renaming a rebuilt sidecar over its published name. Every such
/// write is now a storage operation (`storage::maintain`); admin decides and reports.
/// It also called back into `query::Engine`, which calls admin: the circle is gone.
#[test]
fn admin_changes_the_store_only_through_storage_operations() {
    let files = rust_files(&src().join("admin"));
    assert!(files.len() >= 4, "admin module not found");
    let banned = [
        // The layer that calls admin.
        (
            "crate::query",
            "admin must not depend on query (query calls admin)",
        ),
        (
            "query::",
            "admin must not depend on query (query calls admin)",
        ),
        // Storage internals that write.
        ("storage::fsio", "file writes belong to storage"),
        (
            "storage::recover",
            "manifest rebuilds belong to storage::maintain",
        ),
        (
            ".encode(",
            "encoding a manifest or chunk belongs to storage",
        ),
        ("commit_inner", "commits belong to storage"),
        ("commit_manifest", "commits belong to storage"),
        (".install(", "installing a snapshot belongs to storage"),
        // Direct file-system changes.
        ("fs::write", "file writes belong to storage"),
        ("fs::rename", "renames belong to storage"),
        ("fs::remove", "unlinks belong to storage"),
        ("fs::create_dir", "directories belong to storage"),
        ("fs::hard_link", "links belong to storage"),
        ("File::create", "file writes belong to storage"),
        ("OpenOptions", "file writes belong to storage"),
        ("set_len", "file writes belong to storage"),
    ];
    for f in files {
        for (n, line) in code_lines(&f) {
            for (what, why) in banned {
                assert!(
                    !line.contains(what),
                    "{}:{n} uses {what}: {why}",
                    f.display()
                );
            }
        }
    }
}

/// Tokens are compared (and hashed) in one place: `src/auth`. A front end that
/// compared a header with a secret itself could forget the constant-time comparison
/// or the throttle.
#[test]
fn secrets_are_compared_only_in_the_auth_module() {
    let auth = src().join("auth");
    let mut seen = 0;
    for f in rust_files(&src()) {
        for (n, line) in code_lines(&f) {
            if line.contains("ct_eq") || line.contains("Sha256") {
                if f.starts_with(&auth) {
                    seen += 1;
                } else {
                    panic!(
                        "{}:{n}: token comparison and hashing belong to src/auth",
                        f.display()
                    );
                }
            }
        }
    }
    assert!(seen >= 2, "expected src/auth to hash and compare tokens");
}
