//! Types shared by ingest and the device agent: validated ids and resource names, the device
//! token's claims and time rules, credential formats, the admin API's resources in IoT Core's
//! JSON shape, and Google's error vocabulary. Pure data and validation: no I/O, no async.

pub mod cause;
pub mod clock;
pub mod credential;
pub mod device_api;
pub mod fleet_health;
pub mod iam;
pub mod ids;
pub mod jwt;
pub mod names;
pub mod proto3;
pub mod resources;
pub mod status;

pub use credential::PublicKeyFormat;
pub use ids::{DeviceId, DeviceRef, IdError, Location, NumId, ProjectId, RegistryId, TopicName};
pub use names::{DeviceName, LocationName, RegistryName};
pub use status::{Code, ErrorBody, ErrorInfo};

/// The Pub/Sub attribute names IoT Core put on every telemetry and state message. Pipelines read
/// them by these exact spellings.
pub mod attributes {
    /// The device id.
    pub const DEVICE_ID: &str = "deviceId";
    /// The numeric device id, as decimal text.
    pub const DEVICE_NUM_ID: &str = "deviceNumId";
    /// The registry id.
    pub const DEVICE_REGISTRY_ID: &str = "deviceRegistryId";
    /// The registry's region.
    pub const DEVICE_REGISTRY_LOCATION: &str = "deviceRegistryLocation";
    /// The project id.
    pub const PROJECT_ID: &str = "projectId";
    /// The event's subfolder, present only when it has one.
    pub const SUB_FOLDER: &str = "subFolder";
}
