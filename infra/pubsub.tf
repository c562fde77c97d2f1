# Pub/Sub: where device readings land, as they did with IoT Core. Topics for events and state
# (named by a registry's notification configs), the cloud-to-device fan-out topic a later release
# uses, a dead-letter topic, and example pull subscriptions that show the settings a consumer
# should copy: dead lettering, retry backoff, retention, no expiry.

locals {
  # Messages stay in the deployment's region: the same promise IoT Core's regional registries made.
  message_regions = [var.region]
}

# kms_key_name: customer-managed encryption is opt-in (var.kms_key_name, kms.tf). The default,
# null, is Google-managed AES-256 at rest: a key's cost, and the loss of every message if it is
# destroyed, are the operator's call.
resource "google_pubsub_topic" "events" {
  project      = var.project_id
  name         = "${var.name}-events"
  kms_key_name = var.kms_key_name
  labels       = { purpose = "device-events" }

  message_storage_policy {
    allowed_persistence_regions = local.message_regions
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.pubsub]
}

resource "google_pubsub_topic" "state" {
  project      = var.project_id
  name         = "${var.name}-state"
  kms_key_name = var.kms_key_name
  labels       = { purpose = "device-state" }

  message_storage_policy {
    allowed_persistence_regions = local.message_regions
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.pubsub]
}

# Cloud-to-device fan-out, ingest's delivery bus (DELIVERY_TOPIC): every ingest instance holds a
# short-lived subscription here so a config or command reaches the instance that holds the
# device's connection (grants in iam.tf). One hour of retention: a note older than that is stale
# (the device re-reads its config anyway).
resource "google_pubsub_topic" "c2d" {
  project                    = var.project_id
  name                       = "${var.name}-c2d"
  kms_key_name               = var.kms_key_name
  message_retention_duration = "3600s"
  labels                     = { purpose = "cloud-to-device-fanout" }

  message_storage_policy {
    allowed_persistence_regions = local.message_regions
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.pubsub]
}

# Where the example subscriptions put a message they failed to deliver max_delivery_attempts
# times, so one bad message cannot block a consumer's backlog for days.
resource "google_pubsub_topic" "dead_letter" {
  project      = var.project_id
  name         = "${var.name}-dead-letter"
  kms_key_name = var.kms_key_name
  labels       = { purpose = "dead-letter" }

  message_storage_policy {
    allowed_persistence_regions = local.message_regions
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.pubsub]
}

# Example consumers. Pull, so a laptop, a VM or Dataflow can read them without a public endpoint.
resource "google_pubsub_subscription" "example" {
  for_each = {
    events = google_pubsub_topic.events.id
    state  = google_pubsub_topic.state.id
  }

  project = var.project_id
  name    = "${var.name}-${each.key}-example"
  topic   = each.value
  labels  = { purpose = "example-consumer" }

  # Long enough for a consumer that writes each reading to a database before acknowledging.
  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention
  retain_acked_messages      = false # acknowledged messages would be billed as storage
  enable_message_ordering    = false # IoT Core made no ordering promise; ordering costs throughput

  # Never delete the subscription for inactivity (the default deletes it after 31 idle days,
  # silently dropping every reading published after that).
  expiration_policy {
    ttl = ""
  }

  # Back off on negative acknowledgements instead of redelivering at once.
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

# Dead letters are kept for inspection and replay; nothing reads this automatically.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention
  labels                     = { purpose = "dead-letter" }

  expiration_policy {
    ttl = ""
  }
}

# Dead lettering is done by Pub/Sub's own service agent: it must be allowed to publish to the
# dead-letter topic and to acknowledge the message on the subscription it leaves. Without these
# grants, messages are retried forever instead.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.id
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = google_pubsub_subscription.example

  project      = var.project_id
  subscription = each.value.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
