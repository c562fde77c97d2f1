//! How resources cross the Firestore boundary: a resource is first its API JSON (the serde form
//! the admin API already speaks), then that JSON as Firestore values, so a document reads in the
//! Firestore console exactly like the resource in IoT Core's API, and nothing needs a second
//! schema. Only the few fields the store queries or counts on are its own (see `devices`).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{ArrayValue, MapValue, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value as Json};

use super::backend;
use crate::registry::StoreResult;

/// A document's fields.
pub(super) type Fields = HashMap<String, Value>;

/// The fields of a resource: its API JSON object as Firestore values.
pub(super) fn encode<T: Serialize>(resource: &T) -> StoreResult<Fields> {
    match serde_json::to_value(resource).map_err(backend)? {
        Json::Object(object) => Ok(object.into_iter().map(|(k, v)| (k, to_value(v))).collect()),
        other => Err(backend(format!("expected a JSON object, got {other}"))),
    }
}

/// A resource from document fields; a document that does not decode is a store failure.
pub(super) fn decode<T: DeserializeOwned>(fields: Fields) -> StoreResult<T> {
    let object: Map<String, Json> = fields.into_iter().map(|(k, v)| (k, to_json(v))).collect();
    serde_json::from_value(Json::Object(object)).map_err(backend)
}

/// One JSON value as a Firestore value. Whole numbers stay integers so the console shows them
/// as such; the API JSON carries 64-bit integers as strings anyway.
pub(super) fn to_value(json: Json) -> Value {
    let value_type = match json {
        Json::Null => ValueType::NullValue(0),
        Json::Bool(b) => ValueType::BooleanValue(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => ValueType::IntegerValue(i),
            None => ValueType::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => ValueType::StringValue(s),
        Json::Array(items) => ValueType::ArrayValue(ArrayValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Json::Object(object) => ValueType::MapValue(MapValue {
            fields: object.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        }),
    };
    Value {
        value_type: Some(value_type),
    }
}

/// A Firestore value as JSON. Types this store never writes (someone edited a document by hand)
/// map to the nearest JSON, and the resource's own decoding then says whether that is acceptable.
fn to_json(value: Value) -> Json {
    let Some(value_type) = value.value_type else {
        return Json::Null;
    };
    match value_type {
        ValueType::BooleanValue(b) => Json::Bool(b),
        ValueType::IntegerValue(i) => Json::Number(i.into()),
        ValueType::DoubleValue(f) => Number::from_f64(f).map_or(Json::Null, Json::Number),
        ValueType::StringValue(s) | ValueType::ReferenceValue(s) => Json::String(s),
        ValueType::BytesValue(bytes) => Json::String(STANDARD.encode(bytes)),
        ValueType::TimestampValue(t) => Json::String(t.to_string()),
        ValueType::ArrayValue(array) => {
            Json::Array(array.values.into_iter().map(to_json).collect())
        }
        ValueType::MapValue(map) => Json::Object(
            map.fields
                .into_iter()
                .map(|(k, v)| (k, to_json(v)))
                .collect(),
        ),
        _ => Json::Null,
    }
}

/// An integer field, for the store's own counters.
pub(super) fn integer(i: i64) -> Value {
    Value {
        value_type: Some(ValueType::IntegerValue(i)),
    }
}

/// A string field, for query filters.
pub(super) fn string(s: impl Into<String>) -> Value {
    Value {
        value_type: Some(ValueType::StringValue(s.into())),
    }
}

/// An array of strings, for the store's own lists and for `in` filters.
pub(super) fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value {
        value_type: Some(ValueType::ArrayValue(ArrayValue {
            values: items.into_iter().map(string).collect(),
        })),
    }
}

/// A document reference, for cursors and filters on `__name__`.
pub(super) fn reference(path: impl Into<String>) -> Value {
    Value {
        value_type: Some(ValueType::ReferenceValue(path.into())),
    }
}

/// Reads an integer field, 0 when it is absent.
pub(super) fn integer_field(fields: &Fields, name: &str) -> i64 {
    match fields.get(name).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::IntegerValue(i)) => *i,
        _ => 0,
    }
}

/// Reads an array-of-strings field, empty when it is absent; other entries are skipped.
pub(super) fn strings_field(fields: &Fields, name: &str) -> Vec<String> {
    let Some(ValueType::ArrayValue(array)) = fields.get(name).and_then(|v| v.value_type.as_ref())
    else {
        return Vec::new();
    };
    array
        .values
        .iter()
        .filter_map(|v| match &v.value_type {
            Some(ValueType::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::resources::{Device, DeviceConfig};

    #[test]
    fn a_device_round_trips_through_firestore_values() {
        let device: Device = serde_json::from_value(serde_json::json!({
            "numId": "123",
            "credentials": [{"publicKey": {"format": "ES256_PEM", "key": "k"},
                             "expirationTime": "2030-01-01T00:00:00Z"}],
            "blocked": true,
            "metadata": {"site": "barn"},
            "config": {"version": "3", "binaryData": "AAE=",
                       "cloudUpdateTime": "2024-01-01T00:00:00.123456789Z"},
            "lastErrorStatus": {"code": 7, "message": "no"}
        }))
        .unwrap();
        let fields = encode(&device).unwrap();
        assert!(matches!(
            fields["blocked"].value_type,
            Some(ValueType::BooleanValue(true))
        ));
        let back: Device = decode(fields).unwrap();
        assert_eq!(back, device);
    }

    #[test]
    fn a_document_that_does_not_decode_is_a_backend_failure() {
        let mut fields = Fields::new();
        fields.insert("version".into(), to_value(Json::Bool(true)));
        assert!(decode::<DeviceConfig>(fields).is_err());
    }
}
