//! Full resource names: `projects/{p}/locations/{l}/registries/{r}` and its
//! `/devices/{d}` child, where `{d}` may be a device id or a numeric id. Both the admin API and the
//! device bridges address resources this way.

use std::fmt;

use crate::ids::{DeviceRef, IdError, Location, ProjectId, RegistryId};

/// The parent of registries: `projects/{p}/locations/{l}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocationName {
    /// The project.
    pub project: ProjectId,
    /// The region.
    pub location: Location,
}

impl LocationName {
    /// Validates the two parts.
    pub fn parse(project: &str, location: &str) -> Result<Self, IdError> {
        Ok(Self {
            project: ProjectId::parse(project)?,
            location: Location::parse(location)?,
        })
    }
}

impl fmt::Display for LocationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/locations/{}", self.project, self.location)
    }
}

/// A registry's full name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryName {
    /// The project.
    pub project: ProjectId,
    /// The region.
    pub location: Location,
    /// The registry id.
    pub registry: RegistryId,
}

impl RegistryName {
    /// Validates the three parts of a registry name.
    pub fn from_parts(project: &str, location: &str, registry: &str) -> Result<Self, IdError> {
        Ok(Self {
            project: ProjectId::parse(project)?,
            location: Location::parse(location)?,
            registry: RegistryId::parse(registry)?,
        })
    }

    /// Parses `projects/{p}/locations/{l}/registries/{r}`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let parts: Vec<&str> = value.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "locations", l, "registries", r] => Self::from_parts(p, l, r),
            _ => Err(IdError::Rule {
                kind: "registry name",
                value: value.into(),
                rule: "must look like projects/{project}/locations/{region}/registries/{registry}",
            }),
        }
    }

    /// The location this registry lives in.
    pub fn parent(&self) -> LocationName {
        LocationName {
            project: self.project.clone(),
            location: self.location.clone(),
        }
    }
}

impl fmt::Display for RegistryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "projects/{}/locations/{}/registries/{}",
            self.project, self.location, self.registry
        )
    }
}

/// A device's full name; the last segment may be its id or its numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceName {
    /// The registry holding the device.
    pub registry: RegistryName,
    /// The device, by id or numeric id.
    pub device: DeviceRef,
}

impl DeviceName {
    /// Validates the four parts of a device name.
    pub fn from_parts(
        project: &str,
        location: &str,
        registry: &str,
        device: &str,
    ) -> Result<Self, IdError> {
        Ok(Self {
            registry: RegistryName::from_parts(project, location, registry)?,
            device: DeviceRef::parse(device)?,
        })
    }

    /// Parses `projects/{p}/locations/{l}/registries/{r}/devices/{d}`, the form MQTT client ids
    /// and the HTTP bridge use.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let parts: Vec<&str> = value.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "locations", l, "registries", r, "devices", d] => {
                Self::from_parts(p, l, r, d)
            }
            _ => Err(IdError::Rule {
                kind: "device name",
                value: value.into(),
                rule: "must look like projects/{project}/locations/{region}/registries/{registry}/devices/{device}",
            }),
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/devices/{}", self.registry, self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NumId;

    #[test]
    fn device_names_round_trip() {
        let text = "projects/demo-project/locations/us-central1/registries/reg-1/devices/dev-1";
        let name = DeviceName::parse(text).unwrap();
        assert_eq!(name.to_string(), text);
        assert_eq!(name.registry.registry.as_str(), "reg-1");
    }

    #[test]
    fn a_device_name_may_use_the_numeric_id() {
        let name = DeviceName::parse(
            "projects/demo-project/locations/us-central1/registries/reg-1/devices/123456",
        )
        .unwrap();
        assert_eq!(name.device, DeviceRef::Num(NumId(123456)));
    }

    #[test]
    fn malformed_names_are_refused_with_the_rule() {
        for bad in [
            "",
            "projects/demo-project",
            "projects/demo-project/locations/us-central1/registries/reg-1/devices",
            "projects/demo-project/regions/us-central1/registries/reg-1/devices/dev-1",
            "/projects/demo-project/locations/us-central1/registries/reg-1/devices/dev-1",
            "projects/demo-project/locations/us-central1/registries/reg-1/devices/dev-1/",
            "projects/DEMO/locations/us-central1/registries/reg-1/devices/dev-1",
            "projects/demo-project/locations/us-central1/registries/r/devices/dev-1",
            "projects/demo-project/locations/us-central1/registries/reg-1/devices/goog1",
        ] {
            let err = DeviceName::parse(bad);
            assert!(err.is_err(), "{bad:?}");
        }
        let err = DeviceName::parse("projects/x").unwrap_err().to_string();
        assert!(err.contains("projects/{project}/locations"), "{err}");
    }

    #[test]
    fn registry_names_round_trip() {
        let text = "projects/demo-project/locations/europe-west1/registries/reg-1";
        let name = RegistryName::parse(text).unwrap();
        assert_eq!(name.to_string(), text);
        assert_eq!(
            name.parent().to_string(),
            "projects/demo-project/locations/europe-west1"
        );
        assert!(RegistryName::parse("projects/demo-project/locations/europe-west1").is_err());
    }
}
