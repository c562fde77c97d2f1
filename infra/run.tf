# The two Cloud Run services, both from the one ingest image, each with its own service account:
#   device: the public device endpoint (HTTP bridge). Public at the Cloud Run layer because
#           devices cannot hold Google credentials; every device request carries a JWT signed with
#           the device's own key, which ingest checks against the registry, exactly as IoT Core did.
#   admin:  the admin API the operator CLI talks to. Only principals in var.admin_invokers can
#           reach it: Google's front end rejects anyone else before a request reaches the container.
# Both are created once var.image is set (see infra/README.md for the order).
#
# Every environment variable set below is a setting `ingest serve` reads (ingest/src/config.rs);
# ingest/tests/infra_settings.rs fails the build when they drift apart. PORT is not set here:
# Cloud Run sets it to the container port.

locals {
  deploy = var.image != null

  # Settings both roles share.
  log_format = "json" # Cloud Logging's field layout: severity, message, trace id
}

resource "google_cloud_run_v2_service" "device" {
  count = local.deploy ? 1 : 0

  project     = var.project_id
  name        = "${var.name}-device"
  location    = var.region
  description = "Self-hosted IoT Core: the public device endpoint (HTTP bridge)"
  ingress     = "INGRESS_TRAFFIC_ALL"

  # Public without an allUsers IAM binding: the invoker check is off for this service only.
  # Google recommends this over allUsers, and it works in organisations whose domain-restricted
  # sharing policy forbids allUsers bindings (the default for organisations created since 2024).
  # Devices authenticate to ingest itself with their JWTs; ingest has no admin route on this
  # service at all (ROLE=device).
  invoker_iam_disabled = true

  # Stateless: recreating the service loses nothing. The registry's protection is in firestore.tf.
  deletion_protection = false

  template {
    service_account = google_service_account.device.email

    # An MQTT-over-WebSocket connection is one request for as long as it is open, so the
    # timeout is how long one may last (an hour by default). HTTP requests are still answered
    # within ingest's own REQUEST_TIMEOUT_SECS, below it, with Google's JSON error body.
    timeout = "${max(var.request_timeout_seconds, var.mqtt_websocket_max_seconds)}s"

    # Each open WebSocket takes one of these slots for its whole life.
    max_instance_request_concurrency = var.device_concurrency

    scaling {
      min_instance_count = var.device_min_instances
      max_instance_count = var.device_max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.device_cpu
          memory = var.device_memory
        }
        # Request-based billing: CPU is billed only while requests are in flight, so an idle
        # instance costs nothing. ingest answers a device only after Pub/Sub has the message, so
        # no publish is left for idle time; device bookkeeping (lastEventTime) may be written
        # late, as protocol.md allows, and is always written on shutdown.
        cpu_idle = true
        # Extra CPU while an instance starts: shortens the cold start a device waits through.
        startup_cpu_boost = true
      }

      env {
        name  = "ROLE"
        value = "device"
      }
      env {
        # Cloud Run carries HTTP and WebSockets, not raw TCP: MQTT reaches this service only as
        # MQTT over WebSocket at /mqtt on PORT, behind Cloud Run's own TLS. The TLS listener
        # (8883) is for hosts that take raw TCP.
        name  = "MQTT_ADDR"
        value = "off"
      }
      env {
        name  = "REGISTRY"
        value = local.registry_url
      }
      env {
        name  = "SINK"
        value = "pubsub"
      }
      env {
        # The delivery bus: admin changes reach the device instance holding a device's MQTT
        # connection at once, and that instance's answer (a command's PUBACK) comes back.
        name  = "DELIVERY_TOPIC"
        value = google_pubsub_topic.c2d.id
      }
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        name  = "LOG_FORMAT"
        value = local.log_format
      }
      env {
        # ingest's own deadline, below Cloud Run's timeout above.
        name  = "REQUEST_TIMEOUT_SECS"
        value = "30"
      }
      env {
        # Cloud Run allows 10 s between SIGTERM and SIGKILL; 8 leaves 2 to flush Pub/Sub batches
        # and device bookkeeping.
        name  = "DRAIN_TIMEOUT_SECS"
        value = "8"
      }

      startup_probe {
        http_get {
          path = "/readyz"
        }
        period_seconds    = 1
        timeout_seconds   = 1
        failure_threshold = 30
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
      }
    }
  }

  lifecycle {
    # The image is rolled forward with `gcloud run deploy --image …` (infra/README.md), which
    # also stamps client and client_version; terraform keeps everything else and must not roll
    # the image back to var.image on its next apply.
    ignore_changes = [
      template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_iam_member.device_registry,
    google_pubsub_topic_iam_member.device_publishes,
    google_project_iam_member.delivery_bus,
    google_pubsub_topic_iam_member.delivery_bus_publishes,
    google_pubsub_topic_iam_member.delivery_bus_attaches,
  ]
}

resource "google_cloud_run_v2_service" "admin" {
  count = local.deploy ? 1 : 0

  project     = var.project_id
  name        = "${var.name}-admin"
  location    = var.region
  description = "Self-hosted IoT Core: the admin API (IAM only)"
  # Reachable from the internet so operators' laptops and CI can use it, but only with a Google
  # identity that holds roles/run.invoker on this service (the IAM check stays on). Narrow it to
  # INGRESS_TRAFFIC_INTERNAL_ONLY if your operators come in through a VPC.
  ingress = "INGRESS_TRAFFIC_ALL"

  deletion_protection = false

  template {
    service_account = google_service_account.admin.email
    timeout         = "${var.request_timeout_seconds}s"

    # A handful of operators and scripts: one small instance, two at most, none when idle.
    max_instance_request_concurrency = 20

    scaling {
      min_instance_count = 0
      max_instance_count = 2
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      env {
        name  = "ROLE"
        value = "admin"
      }
      env {
        # With ROLE=admin ingest serves only the admin API, on ADMIN_ADDR (PORT is the device
        # bridge's port and is unused): the address must be the container port above, on all
        # interfaces so Cloud Run's front end can reach it.
        name  = "ADMIN_ADDR"
        value = "0.0.0.0:8080"
      }
      env {
        # Off loopback, ingest refuses to start the admin API unprotected. Cloud Run's IAM check
        # is the protection, so no ADMIN_TOKEN is set: there is no shared secret to leak, to keep
        # in terraform state or to rotate.
        name  = "ADMIN_TRUST_CLOUD_RUN_IAM"
        value = "true"
      }
      env {
        # Who holds every permission; other invokers hold only what registries' IAM policies
        # grant them. Empty: every invoker is an owner.
        name  = "ADMIN_OWNERS"
        value = join(",", var.admin_owners)
      }
      env {
        # The delivery bus: admin changes reach the device instance holding a device's MQTT
        # connection at once, and that instance's answer (a command's PUBACK) comes back.
        name  = "DELIVERY_TOPIC"
        value = google_pubsub_topic.c2d.id
      }
      env {
        name  = "REGISTRY"
        value = local.registry_url
      }
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        name  = "LOG_FORMAT"
        value = local.log_format
      }
      env {
        name  = "REQUEST_TIMEOUT_SECS"
        value = "30"
      }
      env {
        name  = "DRAIN_TIMEOUT_SECS"
        value = "8"
      }

      startup_probe {
        http_get {
          path = "/readyz"
        }
        period_seconds    = 1
        timeout_seconds   = 1
        failure_threshold = 30
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
      }
    }
  }

  lifecycle {
    ignore_changes = [
      template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_iam_member.admin_registry,
    google_project_iam_member.delivery_bus,
    google_pubsub_topic_iam_member.delivery_bus_publishes,
    google_pubsub_topic_iam_member.delivery_bus_attaches,
  ]
}

# The admin API's only door: roles/run.invoker for the listed principals, on this service alone.
resource "google_cloud_run_v2_service_iam_member" "admin_invokers" {
  for_each = local.deploy ? toset(var.admin_invokers) : toset([])

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.admin[0].name
  role     = "roles/run.invoker"
  member   = each.value
}
