//! How commands print: `--output json` gives the server's JSON as it came, pretty-printed, so
//! scripts see exactly the API's proto3 shape; `--output text` gives a short summary for people.
//! The text helpers here keep payload previews and times consistent across commands.

use std::io::Write as _;

use anyhow::Context as _;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The output format chosen with `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A short human summary.
    Text,
    /// The server's JSON, pretty-printed.
    Json,
}

/// Prints a JSON value pretty-printed on stdout.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("formatting JSON")?;
    text.push('\n');
    emit(&text)
}

/// Writes text to stdout. A reader that went away (`ingest devices list | head`) is not an
/// error worth a message, unlike `println!`, which would panic.
pub fn emit(text: &str) -> anyhow::Result<()> {
    emit_bytes(text.as_bytes())
}

/// Writes bytes to stdout as they are (a config payload may be binary).
pub fn emit_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Reads the server's JSON as one of the shared resource types.
pub fn decode<T: DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .with_context(|| format!("the admin API answered with a {what} this CLI cannot read"))
}

/// A time for people, or a dash when there is none.
pub fn time(time: Option<Timestamp>) -> String {
    time.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

/// The payload shown in one line: UTF-8 text (escaped, cut at 60 characters) or its size only.
pub fn preview(data: &[u8]) -> String {
    const MAX: usize = 60;
    match std::str::from_utf8(data) {
        Ok("") => "(empty)".to_owned(),
        Ok(text) => {
            let escaped: String = text.escape_debug().collect();
            if escaped.chars().count() > MAX {
                let cut: String = escaped.chars().take(MAX).collect();
                format!("\"{cut}…\"")
            } else {
                format!("\"{escaped}\"")
            }
        }
        Err(_) => "(binary)".to_owned(),
    }
}

/// "1 byte" or "12 bytes".
pub fn bytes(n: usize) -> String {
    if n == 1 {
        "1 byte".to_owned()
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_escape_text_and_hide_binary() {
        assert_eq!(preview(b"{\"on\": true}\n"), "\"{\\\"on\\\": true}\\n\"");
        assert_eq!(preview(&[0xff, 0x00]), "(binary)");
        assert_eq!(preview(b""), "(empty)");
        assert!(preview("x".repeat(100).as_bytes()).ends_with("…\""));
    }
}
