//! The admin actions as one enum: parsed once where a name arrives (an HTTP path, a
//! Flight action type, a CLI subcommand) and matched everywhere after.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// An admin action. The wire names are [`AdminAction::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminAction {
    /// Read-only checks; `deep` verifies every checksum.
    Validate,
    /// A deep validation.
    Scrub,
    /// Quarantine what cannot be served, rebuild sidecars, reconcile the registry.
    Repair,
    /// Rebuild manifests from chunk headers.
    RebuildManifest,
    /// Merge each month's chunks into one.
    Compact,
}

/// Characters of a client-supplied name that an error message repeats. A longer name
/// is cut: a 100 KB name echoed whole overflows a gRPC client's metadata limit, and
/// the first few dozen characters are enough to recognise a typo.
pub const ECHO_CHARS_MAX: usize = 64;

impl AdminAction {
    /// Every action, in the order the documentation lists them.
    pub const ALL: [AdminAction; 5] = [
        AdminAction::Validate,
        AdminAction::Scrub,
        AdminAction::Repair,
        AdminAction::RebuildManifest,
        AdminAction::Compact,
    ];

    /// The wire name (`rebuild-manifest`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::Validate => "validate",
            AdminAction::Scrub => "scrub",
            AdminAction::Repair => "repair",
            AdminAction::RebuildManifest => "rebuild-manifest",
            AdminAction::Compact => "compact",
        }
    }

    /// Whether the action changes the store (and so defaults to a dry run on the CLI).
    pub fn changes_the_store(self) -> bool {
        matches!(
            self,
            AdminAction::Repair | AdminAction::RebuildManifest | AdminAction::Compact
        )
    }

    /// The known names joined for an error message.
    pub fn names() -> String {
        AdminAction::ALL.map(AdminAction::as_str).join(", ")
    }
}

impl fmt::Display for AdminAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AdminAction {
    type Err = Error;

    /// An unknown name is `InvalidArgument`, naming the known ones and repeating at
    /// most [`ECHO_CHARS_MAX`] characters of the given name.
    fn from_str(name: &str) -> Result<AdminAction, Error> {
        AdminAction::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown admin action {}; expected one of {}",
                    echo(name),
                    AdminAction::names()
                ))
            })
    }
}

/// `name` quoted for an error message, cut to [`ECHO_CHARS_MAX`] characters (on a
/// character boundary) with the full length noted when it was cut.
pub fn echo(name: &str) -> String {
    match name.char_indices().nth(ECHO_CHARS_MAX) {
        None => format!("{name:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &name[..cut], name.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn names_round_trip_and_unknown_names_are_echoed_short() {
        for a in AdminAction::ALL {
            assert_eq!(a.as_str().parse::<AdminAction>().unwrap(), a);
        }
        let long = "é".repeat(100_000);
        let err = long.parse::<AdminAction>().unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.len() < 300, "{}", err.message);
        assert!(err.message.contains("200000 bytes"), "{}", err.message);
        assert!(err.message.contains("rebuild-manifest"), "{}", err.message);
        let short = "Validate".parse::<AdminAction>().unwrap_err();
        assert!(short.message.contains("\"Validate\""), "{}", short.message);
    }
}
