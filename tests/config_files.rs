//! The checked-in configuration files load with the real loader.
//!
//! `config/fastk.example.toml` is the reference an operator copies from, so it must
//! list every key the binary knows, each with its built-in default and a comment, and
//! nothing the binary does not know. The profiles must load and validate, and the
//! `FASTK__SECTION__KEY` variables the container files set must name real keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fastk::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// Flattens a TOML table into `section.key` -> value.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            v => {
                out.insert(key, v.clone());
            }
        }
    }
}

fn keys_of_file(path: &Path) -> BTreeMap<String, toml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", path.display()));
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out);
    out
}

fn default_keys() -> BTreeMap<String, toml::Value> {
    let table = toml::Table::try_from(Config::default()).unwrap();
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out);
    out
}

fn config_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config"))
        .expect("config/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_config_file_loads_and_validates() {
    let files = config_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["container.toml", "dev.toml", "fastk.example.toml"] {
        assert!(names.iter().any(|n| n == want), "config/{want} is missing");
    }
    for path in &files {
        let config = Config::load(Some(path), no_env())
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        config
            .validate()
            .unwrap_or_else(|e| panic!("{} does not validate: {e}", path.display()));
    }
}

#[test]
fn example_lists_every_key_with_its_default() {
    let path = repo().join("config/fastk.example.toml");
    let example = keys_of_file(&path);
    let defaults = default_keys();
    let missing: Vec<&String> = defaults
        .keys()
        .filter(|k| !example.contains_key(*k))
        .collect();
    let extra: Vec<&String> = example
        .keys()
        .filter(|k| !defaults.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "keys in the example that the binary does not know: {extra:?}"
    );
    for (k, v) in &defaults {
        assert_eq!(
            &example[k], v,
            "the example's {k} is not the built-in default"
        );
    }
    let loaded = Config::load(Some(&path), no_env()).unwrap();
    assert_eq!(loaded, Config::default());
}

#[test]
fn every_example_key_has_a_comment_above_it() {
    let text = std::fs::read_to_string(repo().join("config/fastk.example.toml")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut keys = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        keys += 1;
        let above = if i > 0 { lines[i - 1] } else { "" };
        assert!(
            above.starts_with('#') && above.len() > 2,
            "line {} ({line}) needs a one-line comment above it saying why",
            i + 1
        );
    }
    assert_eq!(keys, default_keys().len());
}

#[test]
fn container_profile_binds_all_interfaces_and_uses_the_volume() {
    let c = Config::load(Some(&repo().join("config/container.toml")), no_env()).unwrap();
    assert_eq!(c.storage.root, PathBuf::from("/data"));
    assert!(c.http.addr.starts_with("0.0.0.0:"), "{}", c.http.addr);
    assert!(c.flight.addr.starts_with("0.0.0.0:"), "{}", c.flight.addr);
    // The environment still wins over the file, as the image and compose rely on.
    let env = vec![("FASTK__HTTP__ADDR".to_string(), "0.0.0.0:9999".to_string())];
    let c = Config::load(Some(&repo().join("config/container.toml")), env).unwrap();
    assert_eq!(c.http.addr, "0.0.0.0:9999");
}

#[test]
fn dev_profile_stays_on_loopback() {
    let c = Config::load(Some(&repo().join("config/dev.toml")), no_env()).unwrap();
    assert!(c.http.addr.starts_with("127.0.0.1:"), "{}", c.http.addr);
    assert!(c.flight.addr.starts_with("127.0.0.1:"), "{}", c.flight.addr);
    assert_ne!(c.storage.root, Config::default().storage.root);
}

/// `FASTK__SECTION__KEY=value` assignments in a Dockerfile or compose file
/// (comment lines are skipped: they may mention the pattern itself).
fn env_assignments(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        line_assignments(line, &mut out);
    }
    out
}

fn line_assignments(line: &str, out: &mut Vec<(String, String)>) {
    let mut rest = line;
    while let Some(at) = rest.find("FASTK__") {
        let tail = &rest[at..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..name_len];
        let after = tail[name_len..].trim_start_matches([':', '=', ' ', '"']);
        let value_len = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\\')
            .unwrap_or(after.len());
        out.push((name.to_string(), after[..value_len].to_string()));
        rest = &tail[name_len..];
    }
}

#[test]
fn container_files_set_only_real_keys() {
    for file in ["docker/Dockerfile", "docker/compose.yaml"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let vars: Vec<(String, String)> = env_assignments(&text)
            .into_iter()
            // Compose interpolation (`${FASTK_TOKEN:-}`) is resolved by compose, not here.
            .filter(|(_, v)| !v.starts_with('$') && !v.is_empty())
            .collect();
        assert!(!vars.is_empty(), "{file} sets no FASTK__ variable");
        Config::load(Some(&repo().join("config/container.toml")), vars.clone())
            .unwrap_or_else(|e| panic!("{file}: {e} (variables {vars:?})"));
    }
    let dockerfile = std::fs::read_to_string(repo().join("docker/Dockerfile")).unwrap();
    let c = Config::load(None, env_assignments(&dockerfile)).unwrap();
    assert_eq!(c.storage.root, PathBuf::from("/data"));
    assert_eq!(c.http.addr, "0.0.0.0:8080");
    assert_eq!(c.flight.addr, "0.0.0.0:8815");
}
