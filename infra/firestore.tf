# The registry store: a Firestore database in native mode, shared by every ingest instance on
# Cloud Run (SQLite is for one machine). Registries, devices, credentials, configs and states live
# here; device readings never do.

resource "google_firestore_database" "registry" {
  project     = var.project_id
  name        = var.firestore_database
  location_id = local.firestore_location
  type        = "FIRESTORE_NATIVE"

  # The registry is the one stateful thing here: losing it means re-registering every device.
  # Delete protection stops `gcloud firestore databases delete` and a careless console click;
  # ABANDON makes `terraform destroy` leave the database (and its data) in place.
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  deletion_policy         = "ABANDON"

  # Seven days of point-in-time recovery, e.g. after a script deleted the wrong devices. The
  # registry is small (a few KiB a device), so the extra storage costs cents.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"

  depends_on = [google_project_service.apis]
}
