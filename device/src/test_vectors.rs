//! The shared JWT vectors for unit tests: keys made with the openssl command line. The file is
//! `IOTCORE_VECTORS`, else the repository's copy in `tests/vectors/`; a missing file fails the
//! test, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::Value;

fn vectors() -> Value {
    let path = std::env::var_os("IOTCORE_VECTORS").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/vectors/jwt-vectors.json"
            ))
        },
        PathBuf::from,
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the JWT vectors at {}: {e}; set IOTCORE_VECTORS to jwt-vectors.json",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("the vectors file is JSON")
}

/// A key's PEM text from the vectors file.
pub fn key(name: &str) -> String {
    vectors()["keys"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no key {name} in the vectors"))
        .to_owned()
}
