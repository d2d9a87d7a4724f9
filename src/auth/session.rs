//! Session bearer tokens from Flight's Handshake: a random token per successful
//! Handshake, valid for `auth.session_ttl_s`, acting as the token it was made from
//! (looked up by name at each use, so removing the token ends its sessions).

use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// Most sessions open at once; a Handshake past it is refused until some expire.
pub const MAX_SESSIONS: usize = 100_000;

#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    /// Digest of the session token -> (token name, expiry).
    open: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A new session for the token named `name`.
    pub fn open(&self, name: &str) -> Result<String, Error> {
        let token = super::tokens::new_token()?;
        let mut open = self.open.locked();
        if open.len() >= MAX_SESSIONS {
            let now = Instant::now();
            open.retain(|_, (_, exp)| *exp > now);
            if open.len() >= MAX_SESSIONS {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{MAX_SESSIONS} sessions are open; retry after some expire (auth.session_ttl_s)"
                    ),
                ));
            }
        }
        open.insert(
            super::digest(&token),
            (name.to_string(), Instant::now() + self.ttl),
        );
        Ok(token)
    }

    /// The token name of a live session, by the digest of the presented token.
    pub fn name_of(&self, digest: &[u8; 32]) -> Option<String> {
        let open = self.open.locked();
        open.get(digest)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(name, _)| name.clone())
    }

    /// Forgets expired sessions.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut open = self.open.locked();
        open.retain(|_, (_, exp)| *exp > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_expires() {
        let s = Sessions::new(Duration::from_millis(50));
        let t = s.open("ci").unwrap();
        let d = super::super::digest(&t);
        assert_eq!(s.name_of(&d).as_deref(), Some("ci"));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.name_of(&d), None);
        s.prune();
        assert!(s.open.lock().unwrap().is_empty());
    }
}
