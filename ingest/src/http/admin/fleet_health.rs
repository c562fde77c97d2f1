//! `GET …/registries/{r}/fleetHealth`, an extension of IoT Core's API: how many of the
//! registry's devices were heard from within 5 minutes, an hour, a day, or never, and a
//! histogram of how long ago, counted by [`FleetHealth::tally`] from the store's last-seen
//! times. It needs what listing the devices needs (`cloudiot.devices.list`). The console's fleet
//! page draws it; scripts can watch it.

use axum::Json;
use axum::extract::{Path, State};
use jiff::Timestamp;
use shared::RegistryName;
use shared::fleet_health::FleetHealth;

use super::AdminState;
use crate::http::error::ApiError;

/// Answers the registry's [`FleetHealth`] now.
pub async fn get(
    State(state): State<AdminState>,
    Path((project, location, registry)): Path<(String, String, String)>,
) -> Result<Json<FleetHealth>, ApiError> {
    let name = RegistryName::from_parts(&project, &location, &registry)?;
    let times = state.registry.last_seen_times(&name).await?;
    Ok(Json(FleetHealth::tally(Timestamp::now(), &times)))
}
