//! The rules for names and identifiers that callers and operators choose: principals,
//! purposes, model ids and versions.
//!
//! A leaf module. Every name is checked against its rule before it is stored, logged,
//! audited or echoed in an error message, so a hostile caller cannot grow a log or a status
//! message with it.

/// The longest name or identifier, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A name or identifier that breaks its rule. The message never echoes the value itself
/// (only its length), since the value may be hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("the {kind} is empty")]
    Empty {
        /// What the name names (`principal`, `purpose`, `model name`, …).
        kind: &'static str,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("the {kind} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// What the name names.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character outside its alphabet.
    #[error("the {kind} may hold only the characters {alphabet}")]
    Alphabet {
        /// What the name names.
        kind: &'static str,
        /// The characters allowed.
        alphabet: &'static str,
    },
}

fn check(
    kind: &'static str,
    s: &str,
    alphabet: &'static str,
    allowed: impl Fn(u8) -> bool,
) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            len: s.len(),
            max: MAX_NAME_LEN,
        });
    }
    if !s.bytes().all(allowed) {
        return Err(NameError::Alphabet { kind, alphabet });
    }
    Ok(())
}

/// Checks a principal or purpose name: 1 to 128 characters of `[A-Za-z0-9._@-]`.
pub fn validate_name(kind: &'static str, s: &str) -> Result<(), NameError> {
    check(kind, s, "[A-Za-z0-9._@-]", |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@')
    })
}

/// Checks a model id or version: 1 to 128 characters of `[A-Za-z0-9._-]`.
pub fn validate_id(kind: &'static str, s: &str) -> Result<(), NameError> {
    check(kind, s, "[A-Za-z0-9._-]", |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_follow_their_rules() {
        assert!(validate_name("principal", "bank@eu-1.x_y").is_ok());
        assert_eq!(
            validate_name("principal", ""),
            Err(NameError::Empty { kind: "principal" })
        );
        assert!(matches!(
            validate_id("model name", &"a".repeat(129)),
            Err(NameError::TooLong {
                len: 129,
                max: 128,
                ..
            })
        ));
        assert!(validate_id("model name", &"a".repeat(128)).is_ok());
        assert!(matches!(
            validate_id("model name", "a@b"),
            Err(NameError::Alphabet { .. })
        ));
        assert!(matches!(
            validate_id("model name", "dé"),
            Err(NameError::Alphabet { .. })
        ));
    }

    #[test]
    fn errors_never_echo_the_value() {
        let hostile = "x".repeat(10_000);
        let msg = validate_id("model name", &hostile).unwrap_err().to_string();
        assert!(msg.len() < 100, "{msg}");
        let msg = validate_name("purpose", "<script>")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("<script>"), "{msg}");
    }
}
