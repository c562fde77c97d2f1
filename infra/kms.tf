# Optional customer-managed encryption (var.kms_key_name). Bring your own key (its key ring, its
# rotation and who may destroy it are yours); this file only lets the Google services that store
# our data use it (Pub/Sub, Artifact Registry, and Compute Engine for the MQTT VMs' disks). With the default (null) nothing here is created.

resource "google_kms_crypto_key_iam_member" "pubsub" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_service_agent

  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key_iam_member" "artifact_registry" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.artifact_registry_service_agent

  depends_on = [google_project_service.apis]
}

# The MQTT VMs' boot disks (mqtt_vm.tf), encrypted by Compute Engine's service agent.
resource "google_kms_crypto_key_iam_member" "compute" {
  count = var.kms_key_name == null || !local.mqtt_vm ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@compute-system.iam.gserviceaccount.com"

  depends_on = [google_project_service.apis]
}
