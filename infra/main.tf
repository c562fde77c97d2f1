# Shared pieces: the project's number (for Google's service agents), the names every other file
# uses, and the APIs the deployment needs.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  firestore_location = coalesce(var.firestore_location, var.region)

  # The REGISTRY setting ingest reads (ingest/src/config.rs): the Firestore database in native mode.
  registry_url = "firestore:projects/${var.project_id}/databases/${google_firestore_database.registry.name}"

  # Google-managed identities that act on our resources: Pub/Sub's moves dead letters and
  # encrypts with a customer key; Artifact Registry's encrypts images with one.
  pubsub_service_agent            = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  artifact_registry_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"

  apis = concat(
    [
      "artifactregistry.googleapis.com",
      "firestore.googleapis.com",
      "iam.googleapis.com",
      "pubsub.googleapis.com",
      "run.googleapis.com",
    ],
    var.billing_account == null ? [] : ["billingbudgets.googleapis.com"],
    var.kms_key_name == null ? [] : ["cloudkms.googleapis.com"],
    # The MQTT VMs (mqtt_vm.tf): their TLS secrets first, then the VMs and the load balancer.
    var.mqtt_vm_enabled ? ["compute.googleapis.com", "secretmanager.googleapis.com"] : [],
    var.mqtt_vm_enabled && var.mqtt_dns_zone != null ? ["dns.googleapis.com"] : [],
  )
}

resource "google_project_service" "apis" {
  for_each = toset(local.apis)

  project = var.project_id
  service = each.value
  # Turning an API off on destroy would break anything else in the project that uses it.
  disable_on_destroy = false
}
