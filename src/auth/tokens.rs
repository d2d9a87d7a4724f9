//! The tokens file (`auth.tokens_file`): one `[[token]]` table per token.
//!
//! ```toml
//! [[token]]
//! name = "dashboard"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! scopes = ["read"]
//! symbols = ["BTC*", "ETHUSDT"]   # optional: every symbol when absent
//! ```
//!
//! Only the SHA-256 of a token is stored; `fastk token create` makes a token, prints
//! it once and appends its entry ([`create`]).

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Most tokens one file may hold.
pub const MAX_TOKENS: usize = 10_000;
/// Most symbol patterns one token may hold.
pub const MAX_PATTERNS: usize = 1_000;
/// Longest tokens file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Random bytes in a new token.
const TOKEN_BYTES: usize = 32;

/// One scope a token may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s.trim() {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Scopes = Scopes(7);

    pub fn has(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn list(self) -> Vec<Scope> {
        [Scope::Read, Scope::Write, Scope::Admin]
            .into_iter()
            .filter(|s| self.has(*s))
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Scopes {
        Scopes(iter.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.list().into_iter().map(Scope::name).collect();
        f.write_str(&names.join(","))
    }
}

/// One token of the file, checked.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Scopes,
    pub symbols: Option<Vec<String>>,
}

/// A `[[token]]` table as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    sha256: String,
    scopes: Vec<Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    symbols: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    token: Vec<RawEntry>,
}

/// A checked tokens file.
#[derive(Debug, Default)]
pub struct TokenFile {
    pub token: Vec<TokenEntry>,
}

fn bad(path: &Path, why: impl fmt::Display) -> Error {
    Error::invalid(format!(
        "auth.tokens_file {}: {why}",
        path.file_name()
            .map_or_else(|| "?".into(), |n| n.to_string_lossy())
    ))
}

/// When the file last changed and how long it is: a changed stamp means re-read.
pub fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A token name: 1 to 64 of `A-Z a-z 0-9 _ . -`, not one of the names the server
/// gives itself (`default` for `auth.token`, `anonymous`).
pub fn check_name(name: &str) -> Result<(), String> {
    if name == super::DEFAULT_TOKEN_NAME || name == super::ANONYMOUS {
        return Err(format!(
            "token name {name:?} is reserved (`default` is auth.token, `anonymous` a call \
             without a token); pick another"
        ));
    }
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name {:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
            crate::record::echo(name)
        ))
    }
}

/// A symbol pattern: 1 to 64 characters, no whitespace or control characters.
fn check_pattern(p: &str) -> Result<(), String> {
    if (1..=64).contains(&p.chars().count())
        && !p.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Ok(())
    } else {
        Err(format!(
            "symbol pattern {:?} must be 1 to 64 characters without spaces",
            crate::record::echo(p)
        ))
    }
}

impl TokenFile {
    /// Reads and checks `path`: unique names, 64 hex digits of SHA-256, known scopes.
    pub fn read(path: &Path) -> Result<TokenFile, Error> {
        let meta = std::fs::metadata(path).map_err(|e| bad(path, e))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(bad(path, format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e))?;
        TokenFile::parse(&text).map_err(|why| bad(path, why))
    }

    /// Parses and checks the text of a tokens file.
    pub fn parse(text: &str) -> Result<TokenFile, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if raw.token.len() > MAX_TOKENS {
            return Err(format!("more than {MAX_TOKENS} tokens"));
        }
        let mut out = Vec::with_capacity(raw.token.len());
        for r in raw.token {
            check_name(&r.name)?;
            if out.iter().any(|e: &TokenEntry| e.name == r.name) {
                return Err(format!("token name {:?} appears twice", r.name));
            }
            let sha256 = parse_hex(&r.sha256).ok_or_else(|| {
                format!(
                    "token {:?}: sha256 must be 64 hex digits (the SHA-256 of the token)",
                    r.name
                )
            })?;
            if r.scopes.is_empty() {
                return Err(format!(
                    "token {:?}: scopes is empty; give some of read, write, admin",
                    r.name
                ));
            }
            if let Some(s) = &r.symbols {
                if s.is_empty() || s.len() > MAX_PATTERNS {
                    return Err(format!(
                        "token {:?}: symbols must hold 1 to {MAX_PATTERNS} patterns (leave it out for every symbol)",
                        r.name
                    ));
                }
                for p in s {
                    check_pattern(p).map_err(|w| format!("token {:?}: {w}", r.name))?;
                }
            }
            out.push(TokenEntry {
                name: r.name,
                sha256,
                scopes: r.scopes.into_iter().collect(),
                symbols: r.symbols,
            });
        }
        Ok(TokenFile { token: out })
    }
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token: `fk_` and 43 characters of URL-safe base64 (32 bytes).
pub fn new_token() -> Result<String, Error> {
    use base64::Engine as _;
    let mut raw = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut raw)
        .map_err(|e| Error::internal(format!("no random bytes from the OS: {e}")))?;
    Ok(format!(
        "fk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

/// Makes a token named `name` with `scopes` (and `symbols` patterns), appends its entry
/// to the file at `path` (created with mode 0600 when missing), and returns the token,
/// which is stored nowhere else.
pub fn create(
    path: &Path,
    name: &str,
    scopes: &[Scope],
    symbols: Option<Vec<String>>,
) -> Result<String, Error> {
    check_name(name).map_err(Error::invalid)?;
    if scopes.is_empty() {
        return Err(Error::invalid(
            "--scopes is empty; give some of read, write, admin",
        ));
    }
    if let Some(s) = &symbols {
        for p in s {
            check_pattern(p).map_err(Error::invalid)?;
        }
    }
    let existing = if path.exists() {
        TokenFile::read(path)?
    } else {
        TokenFile::default()
    };
    if existing.token.iter().any(|e| e.name == name) {
        return Err(Error::conflict(format!(
            "a token named {name:?} is already in the file; pick another name or remove that entry"
        )));
    }
    let token = new_token()?;
    let entry = RawEntry {
        name: name.into(),
        sha256: hex(&super::digest(&token)),
        scopes: scopes.to_vec(),
        symbols,
    };
    #[derive(Serialize)]
    struct One<'a> {
        token: [&'a RawEntry; 1],
    }
    let text = toml::to_string(&One { token: [&entry] })
        .map_err(|e| Error::internal(format!("cannot write the entry: {e}")))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| bad(path, e))?;
    f.write_all(format!("\n{text}").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| bad(path, e))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_checked_whole() {
        let h = "ab".repeat(32);
        let ok = format!(
            "[[token]]\nname = \"ci\"\nsha256 = \"{h}\"\nscopes = [\"read\", \"write\"]\n\n\
             [[token]]\nname = \"dash\"\nsha256 = \"{h}\"\nscopes = [\"read\"]\nsymbols = [\"BTC*\"]\n"
        );
        let f = TokenFile::parse(&ok).unwrap();
        assert_eq!(f.token.len(), 2);
        assert!(f.token[0].scopes.has(Scope::Write));
        assert!(!f.token[0].scopes.has(Scope::Admin));
        assert_eq!(
            f.token[1].symbols.as_deref(),
            Some(&["BTC*".to_string()][..])
        );
        let dup = ok.replace("\"dash\"", "\"ci\"");
        assert!(TokenFile::parse(&dup).unwrap_err().contains("twice"));
        let short = ok.replace(&h, "abc");
        assert!(TokenFile::parse(&short).unwrap_err().contains("64 hex"));
        let scope = ok.replace("\"write\"", "\"root\"");
        assert!(TokenFile::parse(&scope).is_err());
        let empty = ok.replace("[\"read\"]\nsymbols", "[]\nsymbols");
        assert!(TokenFile::parse(&empty).unwrap_err().contains("scopes"));
        assert!(TokenFile::parse("").unwrap().token.is_empty());
    }

    #[test]
    fn create_appends_an_entry_whose_digest_matches_the_printed_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let t1 = create(&path, "ci", &[Scope::Write], None).unwrap();
        let t2 = create(&path, "dash", &[Scope::Read], Some(vec!["BTC*".into()])).unwrap();
        assert!(t1.starts_with("fk_") && t1.len() == 46 && t1 != t2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&t1) && !text.contains(&t2),
            "the token itself is never stored"
        );
        let f = TokenFile::read(&path).unwrap();
        assert_eq!(f.token[0].sha256, super::super::digest(&t1));
        assert_eq!(f.token[1].sha256, super::super::digest(&t2));
        let again = create(&path, "ci", &[Scope::Read], None).unwrap_err();
        assert_eq!(again.kind, crate::error::ErrorKind::Conflict);
        assert!(create(&path, "bad name", &[Scope::Read], None).is_err());
        assert!(create(&path, "default", &[Scope::Read], None).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
