//! Page tokens and pages, the same for every store: a token names the last id of the previous
//! page, so a list resumes after it however the data changed in between (ids are unique and
//! ordered), and a store fetches one item more than the page to learn whether another follows.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Page, StoreError};

/// Page tokens carry a version prefix so the format can change without old tokens being
/// misread; the rest is the last id of the previous page, base64url so it is URL-safe.
const TOKEN_PREFIX: &str = "v1.";

/// The token that continues a list after `last_id`.
pub fn page_token(last_id: &str) -> String {
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(last_id))
}

/// Turns the `size + 1` rows a list query fetched into a page: the extra row, when there is
/// one, only says that another page follows, whose token is the last kept id.
pub fn into_page<T>(mut items: Vec<T>, size: usize, id: impl Fn(&T) -> Option<&str>) -> Page<T> {
    let next_page_token = if items.len() > size {
        items.truncate(size);
        items.last().and_then(id).map(page_token)
    } else {
        None
    };
    Page {
        items,
        next_page_token,
    }
}

/// The id a page starts after: `""` (before every id) for the first page. An empty token means
/// the first page, as IoT Core treated `pageToken=`.
pub fn start_after(token: Option<&str>) -> Result<String, StoreError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(String::new());
    };
    let bytes = token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| URL_SAFE_NO_PAD.decode(rest).ok())
        .ok_or(StoreError::BadPageToken)?;
    match String::from_utf8(bytes) {
        Ok(id) if !id.is_empty() => Ok(id),
        _ => Err(StoreError::BadPageToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_strangers_are_refused() {
        let token = page_token("dev/+~%1");
        assert_eq!(start_after(Some(&token)).unwrap(), "dev/+~%1");
        assert_eq!(start_after(None).unwrap(), "");
        assert_eq!(start_after(Some("")).unwrap(), "");
        for bad in ["dev-1", "v1.", "v1.!!", "v2.ZGV2LTE", "v1.__8"] {
            assert!(
                matches!(start_after(Some(bad)), Err(StoreError::BadPageToken)),
                "{bad:?}"
            );
        }
    }
}
