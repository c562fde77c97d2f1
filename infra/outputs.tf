# Outputs: what the README's next steps need (where to push the image, the URLs for devices and
# the CLI, the topic names for a registry's notification configs).

output "image_repository" {
  description = "Push the ingest image here: docker tag … $(terraform output -raw image_repository)/ingest:TAG."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "device_url" {
  description = "Base URL of the public device endpoint (devices use it where they used https://cloudiotdevice.googleapis.com). null until var.image is set."
  value       = one(google_cloud_run_v2_service.device[*].uri)
}

output "admin_url" {
  description = "Base URL of the IAM-only admin API: INGEST_ADMIN_URL for the operator CLI. null until var.image is set."
  value       = one(google_cloud_run_v2_service.admin[*].uri)
}

output "event_topic" {
  description = "Full name of the telemetry topic, for `ingest registries create --event-topic`."
  value       = google_pubsub_topic.events.id
}

output "state_topic" {
  description = "Full name of the state topic, for `ingest registries create --state-topic`."
  value       = google_pubsub_topic.state.id
}

output "c2d_topic" {
  description = "Full name of the delivery bus topic (DELIVERY_TOPIC): configs, commands and device changes between instances."
  value       = google_pubsub_topic.c2d.id
}

output "example_subscriptions" {
  description = "Pull subscriptions to read what devices sent: gcloud pubsub subscriptions pull NAME --auto-ack."
  value       = { for k, s in google_pubsub_subscription.example : k => s.name }
}

output "dead_letter_subscription" {
  description = "Messages the example subscriptions could not deliver end up here."
  value       = google_pubsub_subscription.dead_letter.name
}

output "registry" {
  description = "The REGISTRY setting both services run with."
  value       = local.registry_url
}

output "service_accounts" {
  description = "Runtime identities of the two services (and of the MQTT VMs, when enabled)."
  value = merge(
    {
      device = google_service_account.device.email
      admin  = google_service_account.admin.email
    },
    { for k in local.mqtt_vm_key : k => google_service_account.mqtt[0].email },
  )
}

output "mqtt_bridge_hostname" {
  description = "Where devices connect for MQTT over TLS, ports 8883 and 443: their mqtt_bridge_hostname (IoT Core's was mqtt.googleapis.com). null unless mqtt_vm_enabled and image are set."
  value       = local.mqtt_vm ? var.mqtt_hostname : null
}

output "mqtt_bridge_ip" {
  description = "Where mqtt_hostname's A record points: the MQTT load balancer's address, or without it (mqtt_vm_load_balancer = false) the single VM's reserved address."
  value       = local.mqtt_bridge_ip
}

output "mqtt_dns_record" {
  description = "The DNS record to create where mqtt_hostname's domain is served (terraform creates it itself when mqtt_dns_zone is set)."
  value       = local.mqtt_vm ? "${var.mqtt_hostname}. 300 IN A ${local.mqtt_bridge_ip}" : null
}

output "mqtt_tls_secrets" {
  description = "The two secrets the MQTT VMs read their TLS certificate chain and key from: gcloud secrets versions add NAME --data-file=FILE."
  value       = { for k, s in google_secret_manager_secret.mqtt_tls : k => s.secret_id }
}
