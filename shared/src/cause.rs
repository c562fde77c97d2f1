//! The root cause of an error chain, for messages a person acts on: an HTTP client's own
//! message is generic ("error sending request"), while the innermost source says what happened
//! ("Connection refused (os error 111)"). Both the operator CLI and the device agent report it.

/// The innermost source's message of `err` (its own when it has no source).
pub fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_innermost_message_is_the_one_reported() {
        let err = Outer(std::io::Error::other("connection refused"));
        assert_eq!(innermost_cause(&err), "connection refused");
        assert_eq!(innermost_cause(&err.0), "connection refused");
    }
}
