# Identities: one service account per Cloud Run service, each with only the roles its role in
# ingest needs. The device endpoint publishes and reads the registry; the admin endpoint only
# reads and writes the registry; both use the delivery bus (below). Nobody gets a project-wide Pub/Sub role, and no key is ever made
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

# The delivery bus (ingest's DELIVERY_TOPIC): how a config, a command or a block made through the
# admin service reaches the device instance that holds the device's MQTT connection, and how that
# instance answers. Each running instance of either service makes its own subscription on the c2d
# topic, `NAME-c2d-<instance>`, filtered to the notes addressed to it; it deletes it at shutdown,
# and Pub/Sub removes one left by a crash after a day unused.
#
# On the topic: publish notes, and attach subscriptions to it. On the project: create, read from
# and delete subscriptions, in a custom role holding only those four permissions. Project-wide
# because the subscriptions' names are made at run time and Pub/Sub accepts no IAM conditions
# (https://cloud.google.com/iam/docs/resource-types-with-conditional-roles, 2026-12-04), so a
# grant cannot be narrowed to the `NAME-c2d-` prefix: these accounts could also read other
# subscriptions of the project. Keep other applications' subscriptions out of this project (the
# events themselves pass through the device service anyway).
locals {
  # The keys are known at plan time (for_each needs them); the MQTT VMs join when they exist.
  delivery_bus_members = merge(
    {
      device = google_service_account.device.member
      admin  = google_service_account.admin.member
    },
    { for k in local.mqtt_vm_key : k => google_service_account.mqtt[0].member },
  )
}

resource "google_project_iam_custom_role" "delivery_bus" {
  project     = var.project_id
  role_id     = "${replace(var.name, "-", "_")}_delivery_bus"
  title       = "ingest delivery bus (${var.name})"
  description = "Create, read from and delete the per-instance subscriptions of the cloud-to-device delivery bus."
  permissions = [
    "pubsub.subscriptions.consume",
    "pubsub.subscriptions.create",
    "pubsub.subscriptions.delete",
    "pubsub.subscriptions.get",
  ]
}

resource "google_project_iam_member" "delivery_bus" {
  for_each = local.delivery_bus_members

  project = var.project_id
  role    = google_project_iam_custom_role.delivery_bus.id
  member  = each.value
}

resource "google_pubsub_topic_iam_member" "delivery_bus_publishes" {
  for_each = local.delivery_bus_members

  project = var.project_id
  topic   = google_pubsub_topic.c2d.id
  role    = "roles/pubsub.publisher"
  member  = each.value
}

# roles/pubsub.subscriber on the topic carries pubsub.topics.attachSubscription, which creating a
# subscription on it needs.
resource "google_pubsub_topic_iam_member" "delivery_bus_attaches" {
  for_each = local.delivery_bus_members

  project = var.project_id
  topic   = google_pubsub_topic.c2d.id
  role    = "roles/pubsub.subscriber"
  member  = each.value
}
