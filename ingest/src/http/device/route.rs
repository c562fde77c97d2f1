//! The device API's paths, read by hand: `/v1/projects/{project}/locations/{location}/
//! registries/{registry}/devices/{device}` followed by `:method`, `/config` or `/commands`.
//!
//! axum's router did this before, but for every request it built a vector of its four
//! parameters, each name and value in its own allocation, and stored it and the matched route in
//! the request's extensions: about a tenth of a publish's instructions (BENCHMARKS.md). Here the
//! segments are borrowed from the request's path and decoded only when they hold a `%`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// What a device path names below `…/devices/{device}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resource {
    /// The device itself: `{device}:method`, POSTed.
    Device,
    /// `…/config`.
    Config,
    /// `…/commands`.
    Commands,
}

/// A device path split into its segments, still percent-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DeviceRoute<'a> {
    /// Project, location and registry.
    pub registry: [&'a str; 3],
    /// The device segment; for [`Resource::Device`] it still carries the `:method`.
    pub device: &'a str,
    pub resource: Resource,
}

impl<'a> DeviceRoute<'a> {
    /// The route `path` names, or `None` when it is no device path (no segment may be empty,
    /// as none could be with the router).
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/projects/")?;
        let (project, rest) = segment_before(rest, "locations")?;
        let (location, rest) = segment_before(rest, "registries")?;
        let (registry, rest) = segment_before(rest, "devices")?;
        let (device, resource) = match rest.split_once('/') {
            None => (rest, Resource::Device),
            Some((device, "config")) => (device, Resource::Config),
            Some((device, "commands")) => (device, Resource::Commands),
            Some(_) => return None,
        };
        (!device.is_empty()).then_some(Self {
            registry: [project, location, registry],
            device,
            resource,
        })
    }
}

/// `value/literal/rest` → `(value, rest)`, with `value` not empty.
fn segment_before<'a>(path: &'a str, literal: &str) -> Option<(&'a str, &'a str)> {
    let (value, rest) = path.split_once('/')?;
    let rest = rest.strip_prefix(literal)?.strip_prefix('/')?;
    (!value.is_empty()).then_some((value, rest))
}

/// A segment percent-decoded; borrowed unless it held an escape. `None` when the bytes it
/// decodes to are not UTF-8.
pub(super) fn decoded(segment: &str) -> Option<Cow<'_, str>> {
    // The decoder walks byte by byte even when there is nothing to decode.
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    percent_decode_str(segment).decode_utf8().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_three_device_paths_are_read() {
        let base = "/v1/projects/p/locations/us-central1/registries/r/devices";
        let path = format!("{base}/dev-1:publishEvent");
        let route = DeviceRoute::parse(&path).unwrap();
        assert_eq!(route.registry, ["p", "us-central1", "r"]);
        assert_eq!(route.device, "dev-1:publishEvent");
        assert_eq!(route.resource, Resource::Device);
        let path = format!("{base}/dev-1/config");
        let route = DeviceRoute::parse(&path).unwrap();
        assert_eq!((route.device, route.resource), ("dev-1", Resource::Config));
        let path = format!("{base}/42/commands");
        let route = DeviceRoute::parse(&path).unwrap();
        assert_eq!((route.device, route.resource), ("42", Resource::Commands));
    }

    #[test]
    fn anything_else_is_no_device_path() {
        for path in [
            "/",
            "/v1",
            "/v1/projects/p/locations/l/registries/r/devices",
            "/v1/projects/p/locations/l/registries/r/devices/",
            "/v1/projects/p/locations/l/registries/r/devices/d/",
            "/v1/projects/p/locations/l/registries/r/devices/d/state",
            "/v1/projects/p/locations/l/registries/r/devices/d/config/x",
            "/v1/projects//locations/l/registries/r/devices/d/config",
            "/v1/projects/p/locations/l/registries//devices/d:publishEvent",
            "/v1/projects/p/regions/l/registries/r/devices/d:publishEvent",
            "/v1/projects/p/locations/l/registries/r/groups/d:publishEvent",
            "/v2/projects/p/locations/l/registries/r/devices/d:publishEvent",
            "/v1/projects/p/locations/l/registries/r",
        ] {
            assert_eq!(DeviceRoute::parse(path), None, "{path}");
        }
    }

    #[test]
    fn segments_are_decoded_only_when_escaped() {
        assert!(matches!(decoded("dev-1"), Some(Cow::Borrowed("dev-1"))));
        assert_eq!(decoded("a%25b").unwrap(), "a%b");
        assert_eq!(decoded("%2e%2E").unwrap(), "..");
        assert_eq!(decoded("%ff"), None);
    }
}
