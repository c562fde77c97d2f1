//! Validated identifiers: project, location (region), registry, device, numeric device id and
//! Pub/Sub topic. Each type can only be built by parsing, so code holding one knows it obeys the
//! rules IoT Core enforced; the error says which rule was broken in words an operator can act on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a piece of text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is shorter or longer than the rule allows.
    #[error("{kind} `{value}` must be {min} to {max} characters long, not {len}")]
    Length {
        kind: &'static str,
        value: String,
        min: usize,
        max: usize,
        len: usize,
    },
    /// The first character is not one the rule allows.
    #[error("{kind} `{value}` must start with {expected}")]
    BadStart {
        kind: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A character outside the allowed set.
    #[error("{kind} `{value}` contains `{ch}`; allowed are {allowed}")]
    BadChar {
        kind: &'static str,
        value: String,
        ch: char,
        allowed: &'static str,
    },
    /// Google reserves the `goog` prefix.
    #[error("{kind} `{value}` must not start with `goog` (reserved by Google)")]
    ReservedPrefix { kind: &'static str, value: String },
    /// Any other broken rule, named in the message.
    #[error("{kind} `{value}` {rule}")]
    Rule {
        kind: &'static str,
        value: String,
        rule: &'static str,
    },
}

/// The shared shape of registry, device and topic ids: `[a-zA-Z][-a-zA-Z0-9._+~%]+`, 3 to 255
/// characters, not starting with `goog`.
fn check_resource_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    const ALLOWED: &str = "letters, digits and - . _ + ~ %";
    check_length(kind, value, 3, 255)?;
    if !value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(IdError::BadStart {
            kind,
            value: value.into(),
            expected: "a letter",
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._+~%".contains(*c)))
    {
        return Err(IdError::BadChar {
            kind,
            value: value.into(),
            ch,
            allowed: ALLOWED,
        });
    }
    if value.starts_with("goog") {
        return Err(IdError::ReservedPrefix {
            kind,
            value: value.into(),
        });
    }
    Ok(())
}

fn check_length(kind: &'static str, value: &str, min: usize, max: usize) -> Result<(), IdError> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(IdError::Length {
            kind,
            value: value.into(),
            min,
            max,
            len,
        });
    }
    Ok(())
}

/// Lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen: the
/// rule Google applies to project ids and region names.
fn check_lower_dashed(
    kind: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), IdError> {
    check_length(kind, value, min, max)?;
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(IdError::BadStart {
            kind,
            value: value.into(),
            expected: "a lowercase letter",
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(IdError::BadChar {
            kind,
            value: value.into(),
            ch,
            allowed: "lowercase letters, digits and -",
        });
    }
    if value.ends_with('-') {
        return Err(IdError::Rule {
            kind,
            value: value.into(),
            rule: "must not end with a hyphen",
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the text.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                let check: fn(&'static str, &str) -> Result<(), IdError> = $check;
                check($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A Google Cloud project id: 6 to 30 lowercase letters, digits and hyphens, starting with a
    /// letter; the legacy domain-scoped form `example.com:my-project` is accepted too.
    ProjectId,
    "project id",
    |kind, value| match value.rsplit_once(':') {
        Some((domain, project)) if !domain.is_empty() && !domain.contains('/') => {
            check_lower_dashed(kind, project, 6, 30)
        }
        _ => check_lower_dashed(kind, value, 6, 30),
    }
);

string_id!(
    /// A location (region) such as `us-central1` or `europe-west1`.
    Location,
    "location",
    |kind, value| check_lower_dashed(kind, value, 2, 63)
);

string_id!(
    /// A registry id: `[a-zA-Z][-a-zA-Z0-9._+~%]+`, 3 to 255 characters, not starting with `goog`.
    RegistryId,
    "registry id",
    check_resource_id
);

string_id!(
    /// A device id: the same rule as a registry id.
    DeviceId,
    "device id",
    check_resource_id
);

/// A device's numeric id, unique across the whole installation. New ids stay below 2^53 so that
/// tooling that reads JSON numbers as doubles never rounds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumId(pub u64);

impl NumId {
    /// The largest numeric id this project hands out (2^53 - 1).
    pub const MAX_ALLOCATED: u64 = (1 << 53) - 1;

    /// Parses decimal text; leading zeros, signs and spaces are refused.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let rule = |rule| IdError::Rule {
            kind: "numeric device id",
            value: value.into(),
            rule,
        };
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(rule("must be a decimal number"));
        }
        if value.len() > 1 && value.starts_with('0') {
            return Err(rule("must not have leading zeros"));
        }
        value
            .parse::<u64>()
            .map(NumId)
            .map_err(|_| rule("must fit in an unsigned 64-bit number"))
    }
}

impl fmt::Display for NumId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a request names a device: by its id or by its numeric id. Device ids start with a letter,
/// so a segment of digits is always a numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceRef {
    /// By the id the operator chose.
    Id(DeviceId),
    /// By the numeric id the registry assigned.
    Num(NumId),
}

impl DeviceRef {
    /// Parses a path segment naming a device.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        if value.starts_with(|c: char| c.is_ascii_digit()) {
            NumId::parse(value).map(DeviceRef::Num)
        } else {
            DeviceId::parse(value).map(DeviceRef::Id)
        }
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRef::Id(id) => id.fmt(f),
            DeviceRef::Num(num) => num.fmt(f),
        }
    }
}

/// A full Pub/Sub topic name, `projects/{project}/topics/{topic}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicName {
    project: ProjectId,
    topic: String,
}

impl TopicName {
    /// Parses `projects/{project}/topics/{topic}`; the topic follows Pub/Sub's rule (3 to 255 of
    /// letters, digits and `-._+~%`, starting with a letter, not `goog`).
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let bad = || IdError::Rule {
            kind: "Pub/Sub topic",
            value: value.into(),
            rule: "must be a full name: projects/{project}/topics/{topic}",
        };
        let parts: Vec<&str> = value.split('/').collect();
        let [projects, project, topics, topic] = parts.as_slice() else {
            return Err(bad());
        };
        if *projects != "projects" || *topics != "topics" {
            return Err(bad());
        }
        let project = ProjectId::parse(project)?;
        check_resource_id("topic id", topic)?;
        Ok(Self {
            project,
            topic: (*topic).to_owned(),
        })
    }

    /// The project that owns the topic.
    pub fn project(&self) -> &ProjectId {
        &self.project
    }

    /// The short topic id.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/topics/{}", self.project, self.topic)
    }
}

impl Serialize for TopicName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_follow_iot_cores_rule() {
        let long = format!("a{}", "b".repeat(254));
        let too_long = format!("a{}", "b".repeat(255));
        let cases: &[(&str, bool)] = &[
            ("abc", true),
            ("my-device.01_x+y~z%20", true),
            ("Sensor7", true),
            (&long, true),
            ("ab", false),
            (&too_long, false),
            ("1abc", false),
            ("-abc", false),
            ("a b c", false),
            ("abc/def", false),
            ("abc:def", false),
            ("devicé", false),
            ("goog-device", false),
            ("", false),
        ];
        for (value, ok) in cases {
            assert_eq!(DeviceId::parse(value).is_ok(), *ok, "device id {value:?}");
            assert_eq!(
                RegistryId::parse(value).is_ok(),
                *ok,
                "registry id {value:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_broken_rule() {
        let err = DeviceId::parse("goog-x").unwrap_err().to_string();
        assert!(err.contains("goog"), "{err}");
        let err = DeviceId::parse("ab").unwrap_err().to_string();
        assert!(err.contains("3 to 255"), "{err}");
        let err = DeviceId::parse("abc def").unwrap_err().to_string();
        assert!(err.contains("` `"), "{err}");
        let err = RegistryId::parse("9lives").unwrap_err().to_string();
        assert!(err.contains("start with a letter"), "{err}");
    }

    #[test]
    fn project_ids_follow_googles_rule() {
        let cases: &[(&str, bool)] = &[
            ("demo-project", true),
            ("abcdef", true),
            ("project-1234567890123456789012", true),
            ("example.com:my-project", true),
            ("abcde", false),
            ("project-12345678901234567890123", false),
            ("Demo-project", false),
            ("1project", false),
            ("demo-project-", false),
            ("demo_project", false),
            (":demo-project", false),
        ];
        for (value, ok) in cases {
            assert_eq!(ProjectId::parse(value).is_ok(), *ok, "project {value:?}");
        }
    }

    #[test]
    fn locations_are_lowercase_dashed() {
        for (value, ok) in [
            ("us-central1", true),
            ("europe-west1", true),
            ("US-central1", false),
            ("us central1", false),
            ("us-", false),
            ("1us", false),
            ("", false),
        ] {
            assert_eq!(Location::parse(value).is_ok(), ok, "location {value:?}");
        }
    }

    #[test]
    fn numeric_ids_are_plain_decimal_u64() {
        assert_eq!(NumId::parse("0"), Ok(NumId(0)));
        assert_eq!(NumId::parse("18446744073709551615"), Ok(NumId(u64::MAX)));
        for bad in ["", "01", "+1", "-1", "1 ", "18446744073709551616", "12a"] {
            assert!(NumId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_device_segment_of_digits_is_a_numeric_id() {
        assert_eq!(
            DeviceRef::parse("2820826361193805").unwrap(),
            DeviceRef::Num(NumId(2820826361193805))
        );
        assert_eq!(
            DeviceRef::parse("dev-1").unwrap(),
            DeviceRef::Id(DeviceId::parse("dev-1").unwrap())
        );
        assert!(DeviceRef::parse("0x12").is_err());
    }

    #[test]
    fn topic_names_are_full_names() {
        let ok = TopicName::parse("projects/demo-project/topics/events").unwrap();
        assert_eq!(ok.topic(), "events");
        assert_eq!(ok.to_string(), "projects/demo-project/topics/events");
        for bad in [
            "events",
            "projects/demo-project/topics/",
            "projects/demo-project/subscriptions/events",
            "projects/demo-project/topics/goog-events",
            "projects/Demo/topics/events",
            "projects/demo-project/topics/events/extra",
        ] {
            assert!(TopicName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_deserialize_through_their_rules() {
        let id: DeviceId = serde_json::from_str("\"dev-1\"").unwrap();
        assert_eq!(id.as_str(), "dev-1");
        let err = serde_json::from_str::<DeviceId>("\"x\"").unwrap_err();
        assert!(err.to_string().contains("3 to 255"), "{err}");
    }
}
