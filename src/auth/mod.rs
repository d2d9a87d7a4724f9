//! Who may do what: bearer tokens with scopes and symbol patterns, shared by the HTTP
//! and Flight front ends.
//!
//! - [`tokens`]: the tokens file (`auth.tokens_file`): names, SHA-256 of each token,
//!   scopes, symbol patterns; re-read when it changes. `auth.token` is one more token,
//!   named `default`, with every scope.
//! - [`session`]: bearer tokens handed out by Flight's Handshake for Basic credentials.
//! - [`throttle`]: failed attempts per client address, answered slower and slower.
//! - [`cmd`]: `fastk token create` and `fastk token list`.
//!
//! A front end asks [`Authority::authorize`] with what the call needs ([`Access`]) and
//! gets a [`Principal`], which then answers for the symbols the call names
//! ([`Principal::check_symbol`]). A missing or unknown token is `unauthorized` (401,
//! gRPC Unauthenticated); a known one outside its scopes or symbols is `forbidden`
//! (403, PermissionDenied). No secret ever reaches a log line, an error or a metric:
//! only token names do.

pub mod cmd;
pub mod session;
pub mod throttle;
pub mod tokens;

use crate::sync::RwLockExt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
use crate::error::{Error, ErrorKind};

pub use tokens::{Scope, Scopes, TokenEntry, TokenFile};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never needs a token (health, metrics, docs, ListActions, Handshake).
    Open,
    /// Reads and SQL: the `read` scope, when `auth.protect_reads` is set.
    Read,
    /// Writes, registration and deletes: the `write` scope.
    Write,
    /// Admin actions (and later snapshots and derive rules): the `admin` scope.
    Admin,
    /// A known token, whatever its scopes (when tokens are configured): a call whose
    /// scope is known only once its first message is read (DoPut).
    Token,
}

impl Access {
    fn scope(self) -> Option<Scope> {
        match self {
            Access::Open | Access::Token => None,
            Access::Read => Some(Scope::Read),
            Access::Write => Some(Scope::Write),
            Access::Admin => Some(Scope::Admin),
        }
    }
}

/// The name `auth.token` goes by: in audit lines and as the Handshake user.
pub const DEFAULT_TOKEN_NAME: &str = "default";
/// The principal of a call that needed no token.
pub const ANONYMOUS: &str = "anonymous";
/// How often the tokens file is looked at for a change.
pub const TOKENS_POLL: Duration = Duration::from_secs(1);

/// Who a call runs as: a token's name, scopes and symbol patterns, and the bearer
/// token it came with (kept to pass on to the other nodes of a distributed query).
#[derive(Debug, Clone)]
pub struct Principal(Arc<Grant>, Option<Bearer>);

/// A bearer token, never printed.
#[derive(Clone)]
struct Bearer(Arc<str>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

#[derive(Debug)]
struct Grant {
    name: String,
    scopes: Scopes,
    /// `None`: every symbol.
    symbols: Option<Vec<String>>,
}

impl Principal {
    /// A principal with every scope and symbol (no auth configured, or an open call).
    pub fn anonymous() -> Principal {
        Principal(
            Arc::new(Grant {
                name: ANONYMOUS.into(),
                scopes: Scopes::ALL,
                symbols: None,
            }),
            None,
        )
    }

    /// The bearer token this principal was authorized with, to pass on to the other
    /// nodes of a distributed query (`None` when the call needed no token).
    pub fn bearer(&self) -> Option<&str> {
        self.1.as_ref().map(|b| &*b.0)
    }

    fn of(entry: &TokenEntry) -> Principal {
        Principal(
            Arc::new(Grant {
                name: entry.name.clone(),
                scopes: entry.scopes,
                symbols: entry.symbols.clone(),
            }),
            None,
        )
    }

    /// The token's name (never its secret).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// True when the token may name only some symbols.
    pub fn limited(&self) -> bool {
        self.0.symbols.is_some()
    }

    /// Whether `symbol` is within the token's patterns.
    pub fn allows(&self, symbol: &str) -> bool {
        self.0
            .symbols
            .as_ref()
            .is_none_or(|pats| pats.iter().any(|p| glob(p, symbol)))
    }

    /// `forbidden` unless `symbol` is within the token's patterns.
    pub fn check_symbol(&self, symbol: &str) -> Result<(), Error> {
        if self.allows(symbol) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Forbidden,
            format!(
                "token {:?} may not use symbol {}: it is limited to {}",
                self.name(),
                crate::record::echo(symbol),
                self.patterns()
            ),
        ))
    }

    /// `forbidden` for a token limited to some symbols: the call (a listing, `"*"`,
    /// an admin action) cannot be held to them.
    pub fn check_every_symbol(&self, what: &str) -> Result<(), Error> {
        if !self.limited() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Forbidden,
            format!(
                "token {:?} is limited to symbols {}, and {what} is not limited to \
                 symbols: name the symbols, or use a token without symbol patterns",
                self.name(),
                self.patterns()
            ),
        ))
    }

    /// The token's symbol patterns for messages.
    pub fn patterns(&self) -> String {
        self.0
            .symbols
            .as_ref()
            .map_or_else(|| "*".into(), |p| p.join(","))
    }

    /// The audit line of an accepted write, delete or admin call, once every check of
    /// it passed: the token's name, the scope, the method and (HTTP) the path without
    /// its query string. Never a secret.
    pub fn audit(&self, access: Access, method: &str, path: Option<&str>) {
        if matches!(access, Access::Write | Access::Admin) {
            tracing::info!(
                target: "fastk::audit",
                token = self.name(),
                scope = if access == Access::Admin { "admin" } else { "write" },
                method,
                path,
                "accepted"
            );
        }
    }

    fn require(&self, scope: Scope) -> Result<(), Error> {
        if self.0.scopes.has(scope) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Forbidden,
            format!(
                "token {:?} lacks the {} scope this call needs (it has: {})",
                self.name(),
                scope.name(),
                self.0.scopes
            ),
        ))
    }
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// SHA-256 of a token, as stored in the tokens file.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Failed and refused attempts, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub unauthorized: AtomicU64,
    pub forbidden: AtomicU64,
    pub throttled: AtomicU64,
}

/// The live token table, the sessions and the throttle of one server.
#[derive(Debug)]
pub struct Authority {
    protect_reads: bool,
    /// `auth.token`'s digest, when set.
    legacy: Option<[u8; 32]>,
    file: Option<PathBuf>,
    table: RwLock<Loaded>,
    sessions: session::Sessions,
    throttle: throttle::Throttle,
    pub counters: Counters,
}

/// The tokens file as last read, and what it looked like then.
#[derive(Debug, Default)]
struct Loaded {
    entries: Vec<TokenEntry>,
    stamp: Option<(SystemTime, u64)>,
}

impl Authority {
    /// The authority of `cfg`. The tokens file is read by [`Authority::load`]; until
    /// then no token of it is known (calls fail closed).
    pub fn new(cfg: &AuthConfig) -> Authority {
        Authority {
            protect_reads: cfg.protect_reads,
            legacy: (!cfg.token.is_empty()).then(|| digest(&cfg.token)),
            file: (!cfg.tokens_file.is_empty()).then(|| PathBuf::from(&cfg.tokens_file)),
            table: RwLock::new(Loaded::default()),
            sessions: session::Sessions::new(Duration::from_secs(cfg.session_ttl_s)),
            throttle: throttle::Throttle::default(),
            counters: Counters::default(),
        }
    }

    /// True when any token is configured; otherwise every call is allowed.
    pub fn enabled(&self) -> bool {
        self.legacy.is_some() || self.file.is_some()
    }

    /// Reads the tokens file (if one is configured). An error names the file's problem.
    pub fn load(&self) -> Result<(), Error> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let stamp = tokens::stamp(path);
        let file = TokenFile::read(path)?;
        let mut t = self.table.write_now();
        t.entries = file.token;
        t.stamp = stamp;
        Ok(())
    }

    /// Re-reads the tokens file when it changed since the last read. A file that no
    /// longer parses keeps the last good table (logged), so a half-saved edit does not
    /// lock every client out.
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.file else {
            return;
        };
        let stamp = tokens::stamp(path);
        let same = self.table.read_now().stamp == stamp;
        if same {
            return;
        }
        match TokenFile::read(path) {
            Ok(file) => {
                let mut t = self.table.write_now();
                tracing::info!(tokens = file.token.len(), "auth.tokens_file re-read");
                t.entries = file.token;
                t.stamp = stamp;
            }
            Err(e) => {
                let mut t = self.table.write_now();
                // Remember the stamp so the same bad file is reported once.
                t.stamp = stamp;
                tracing::error!(error = %e.message, "auth.tokens_file changed but cannot be used; keeping the tokens read before");
            }
        }
    }

    /// The principal of a bearer token, or `unauthorized`.
    fn resolve(&self, token: &str) -> Option<Principal> {
        let d = digest(token);
        // Every stored digest is compared, in constant time, so timing says nothing
        // about which (or whether a) token matched.
        let mut found: Option<Principal> = None;
        if let Some(l) = &self.legacy
            && bool::from(l.ct_eq(&d))
        {
            found = Some(Principal(
                Arc::new(Grant {
                    name: DEFAULT_TOKEN_NAME.into(),
                    scopes: Scopes::ALL,
                    symbols: None,
                }),
                None,
            ));
        }
        let t = self.table.read_now();
        for e in &t.entries {
            if bool::from(e.sha256.ct_eq(&d)) && found.is_none() {
                found = Some(Principal::of(e));
            }
        }
        drop(t);
        if found.is_some() {
            return found;
        }
        let name = self.sessions.name_of(&d)?;
        self.by_name(&name)
    }

    /// The current grant of the token named `name` (a session's token).
    fn by_name(&self, name: &str) -> Option<Principal> {
        if name == DEFAULT_TOKEN_NAME && self.legacy.is_some() {
            return Some(Principal(
                Arc::new(Grant {
                    name: DEFAULT_TOKEN_NAME.into(),
                    scopes: Scopes::ALL,
                    symbols: None,
                }),
                None,
            ));
        }
        let t = self.table.read_now();
        t.entries.iter().find(|e| e.name == name).map(Principal::of)
    }

    /// Who a call runs as, given its `Authorization` value and what it needs. A
    /// failure from an address that keeps failing is answered only after a delay.
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
        access: Access,
    ) -> Result<Principal, Error> {
        let needs_token = match access {
            Access::Open => false,
            Access::Read => self.protect_reads,
            Access::Write | Access::Admin | Access::Token => true,
        };
        if !needs_token || !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let principal = match authorization.map(bearer) {
            None => Err("this call needs a token: send `Authorization: Bearer <token>`"),
            Some(None) => Err(
                "the Authorization value must use the Bearer scheme: `Authorization: Bearer <token>`",
            ),
            Some(Some(token)) => self
                .resolve(token)
                .map(|p| Principal(p.0, Some(Bearer(token.into()))))
                .ok_or("the bearer token is not valid for this server"),
        };
        let principal = match principal {
            Ok(p) => p,
            Err(message) => {
                self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                if let Some(delay) = peer.and_then(|ip| self.throttle.failed(ip)) {
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                }
                return Err(Error::new(ErrorKind::Unauthorized, message));
            }
        };
        if let Some(scope) = access.scope() {
            principal
                .require(scope)
                .inspect_err(|e| self.note_forbidden(e))?;
        }
        Ok(principal)
    }

    /// Counts a refusal made after [`Authority::authorize`] (a symbol outside the
    /// token's patterns), for `/metrics`.
    pub fn note_forbidden(&self, e: &Error) {
        if e.kind == ErrorKind::Forbidden {
            self.counters.forbidden.fetch_add(1, Ordering::Relaxed);
            // The message names the token and the symbol, never a secret.
            tracing::info!(target: "fastk::audit", reason = %e.message, "refused");
        }
    }

    /// Flight's Handshake: Basic credentials (user = token name, password = token) for
    /// a session bearer token that expires after `auth.session_ttl_s`.
    pub async fn handshake(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<String, Error> {
        if !self.enabled() {
            // Nothing to authenticate: any bearer (or none) is accepted anyway.
            return Ok(String::new());
        }
        let creds = authorization.and_then(basic);
        let grant = creds.as_ref().and_then(|(user, password)| {
            self.resolve(password)
                .filter(|p| bool::from(p.name().as_bytes().ct_eq(user.as_bytes())))
        });
        let Some(p) = grant else {
            self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            if let Some(delay) = peer.and_then(|ip| self.throttle.failed(ip)) {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
            }
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "Handshake needs `authorization: Basic base64(name:token)` with a token's \
                 name and the token",
            ));
        };
        self.sessions.open(p.name())
    }
}

/// The token of a `Bearer <token>` value (scheme case-insensitive); `None` for any
/// other scheme.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The user and password of a `Basic base64(user:password)` value.
fn basic(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    // Padding optional: Go's Flight client (ADBC) sends base64 without it.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let raw = lenient.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Keeps the tokens file current: re-reads it when it changes, and drops expired
/// sessions, until `stop`.
pub async fn watch(authority: Arc<Authority>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TOKENS_POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        authority.reload_if_changed();
        authority.sessions.prune();
        authority.throttle.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("BTC*", "BTCUSDT"));
        assert!(glob("BTC*", "BTC"));
        assert!(!glob("BTC*", "ETHBTC"));
        assert!(glob("*USDT", "ETHUSDT"));
        assert!(glob("?TC*", "BTCUSDT"));
        assert!(glob("*", ""));
        assert!(glob("A*B*C", "AxxBxxC"));
        assert!(!glob("A*B*C", "AxxBxx"));
        assert!(glob("ETHUSDT", "ETHUSDT"));
        assert!(!glob("ETHUSDT", "ethusdt"));
    }

    #[test]
    fn basic_and_bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        // "ci:s3cret"
        assert_eq!(
            basic("Basic Y2k6czNjcmV0"),
            Some(("ci".into(), "s3cret".into()))
        );
        assert_eq!(basic("Bearer Y2k6czNjcmV0"), None);
        // Unpadded, as Go's Flight client sends it ("ci:s3cret1").
        assert_eq!(
            basic("Basic Y2k6czNjcmV0MQ"),
            Some(("ci".into(), "s3cret1".into()))
        );
        assert_eq!(basic("Basic !!!"), None);
    }

    fn authority(token: &str, protect_reads: bool) -> Authority {
        Authority::new(&AuthConfig {
            token: token.into(),
            protect_reads,
            ..AuthConfig::default()
        })
    }

    #[tokio::test]
    async fn the_legacy_token_has_every_scope_and_reads_follow_protect_reads() {
        let open = authority("", true);
        assert_eq!(
            open.authorize(None, None, Access::Admin)
                .await
                .unwrap()
                .name(),
            ANONYMOUS
        );
        let a = authority("s3cret", false);
        assert!(a.authorize(None, None, Access::Read).await.is_ok());
        let e = a.authorize(None, None, Access::Write).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        let e = a
            .authorize(Some("Bearer nope"), None, Access::Write)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(!e.message.contains("s3cret"));
        let p = a
            .authorize(Some("Bearer s3cret"), None, Access::Admin)
            .await
            .unwrap();
        assert_eq!(p.name(), DEFAULT_TOKEN_NAME);
        assert_eq!(a.counters.unauthorized.load(Ordering::Relaxed), 2);
        let reads = authority("s3cret", true);
        let e = reads.authorize(None, None, Access::Read).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(reads.authorize(None, None, Access::Open).await.is_ok());
    }

    #[tokio::test]
    async fn a_handshake_session_acts_as_its_token_until_the_token_goes() {
        let a = authority("s3cret", true);
        // "default:s3cret"
        let session = a
            .handshake(Some("Basic ZGVmYXVsdDpzM2NyZXQ="), None)
            .await
            .unwrap();
        assert!(!session.is_empty() && session != "s3cret");
        let p = a
            .authorize(Some(&format!("Bearer {session}")), None, Access::Write)
            .await
            .unwrap();
        assert_eq!(p.name(), DEFAULT_TOKEN_NAME);
        // "default:wrong"
        let e = a
            .handshake(Some("Basic ZGVmYXVsdDp3cm9uZw=="), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        // "other:s3cret": the right token under another name is refused.
        assert!(
            a.handshake(Some("Basic b3RoZXI6czNjcmV0"), None)
                .await
                .is_err()
        );
    }
}
