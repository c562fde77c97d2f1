//! The shared JWT vectors: keys made with the openssl command line and tokens signed by PyJWT.
//! The file is `IOTCORE_VECTORS`, else the repository's copy in `tests/vectors/` (which
//! `scripts/test` keeps identical to the steering repo's `shared/vectors/`). A missing file fails
//! the test; it never skips.

use std::path::PathBuf;

use serde_json::Value;

/// Where the vectors file is.
pub fn vectors_path() -> PathBuf {
    std::env::var_os("IOTCORE_VECTORS").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/vectors/jwt-vectors.json"
            ))
        },
        PathBuf::from,
    )
}

/// The whole vectors file.
pub fn vectors() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the JWT vectors at {}: {e}; set IOTCORE_VECTORS to the path of jwt-vectors.json",
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
