# Identities: one service account per Cloud Run service, each with only the roles its role in
# ingest needs. The device endpoint publishes and reads the registry; the admin endpoint only
# reads and writes the registry. Nobody gets a project-wide Pub/Sub role, and no key is ever made
# for either account (Cloud Run hands them tokens from the metadata server).

resource "google_service_account" "device" {
  project      = var.project_id
  account_id   = "${var.name}-device"
  display_name = "ingest device endpoint (${var.name})"
  description  = "Runs the public device endpoint: verifies device tokens against the registry and publishes to the event and state topics."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "admin" {
  project      = var.project_id
  account_id   = "${var.name}-admin"
  display_name = "ingest admin endpoint (${var.name})"
  description  = "Runs the IAM-only admin endpoint: manages registries, devices and configs in Firestore."

  depends_on = [google_project_service.apis]
}

# The registry store's user role (read and write documents, nothing administrative). It is granted
# on the project: narrowing it to the one database would take an IAM condition on the database's
# name, left out to keep the grant plain. So keep other applications' Firestore data out of this
# project.
resource "google_project_iam_member" "device_registry" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.device.member
}

resource "google_project_iam_member" "admin_registry" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.admin.member
}

# Publisher on exactly the topics a registry's eventNotificationConfigs and
# stateNotificationConfig name (set through the admin API), and nothing else. A registry that
# names another topic gets PERMISSION_DENIED from Pub/Sub, and its devices a 503: grant that topic
# here too if you add one.
resource "google_pubsub_topic_iam_member" "device_publishes" {
  for_each = {
    events = google_pubsub_topic.events.id
    state  = google_pubsub_topic.state.id
  }

  project = var.project_id
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = google_service_account.device.member
}

# Not granted yet, on purpose: the cloud-to-device fan-out (a later release) will need publisher
# on the c2d topic for the admin account, and for the device account subscriber on it plus the
# right to create and delete its own short-lived subscriptions. They are added with the code that
# uses them.
