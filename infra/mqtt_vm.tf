# MQTT over TLS on 8883 and 443, the way IoT Core served mqtt.googleapis.com: Cloud Run carries no
# raw TCP, so a regional managed instance group runs the same ingest image (ROLE=device) behind an
# external passthrough Network Load Balancer. TLS ends in ingest itself, with the certificate and
# key from Secret Manager (fetched at boot and every 10 minutes, re-read by ingest on change), and
# ingest sees each device's own address. Why this design and what it costs: infra/README.md.
#
# var.mqtt_vm_load_balancer = false is the cheapest path for a small fleet: no load balancer (its
# forwarding rule alone is about $18 a month), but one VM in a zonal group of one, autohealed,
# that keeps a reserved external address across every recreation (a per-instance config's
# stateful external IP); devices connect to that address directly.
#
# Off unless var.mqtt_vm_enabled (and var.image) is set, so existing deployments do not change.
# The VMs boot Container-Optimized OS and run the container from cloud-init and systemd
# (infra/vm/): no container declaration metadata, whose agent is deprecated.
#
# Every variable in local.mqtt_vm_env is a setting `ingest serve` reads;
# ingest/tests/api/infra_settings.rs checks that, the ports, the health checks and the stop
# timeout against ingest's drain, and rehearses infra/vm/start.sh against fakes.

locals {
  # The VMs need the image; the secrets come first, so their versions can be added before.
  mqtt_vm      = var.mqtt_vm_enabled && local.deploy
  mqtt_secrets = var.mqtt_vm_enabled
  # Either the load-balanced regional group, or the single VM with its own address.
  mqtt_vm_lb     = local.mqtt_vm && var.mqtt_vm_load_balancer
  mqtt_vm_single = local.mqtt_vm && !var.mqtt_vm_load_balancer
  # ["mqtt"] when the VMs exist: a key for maps of members that for_each needs known at plan time.
  mqtt_vm_key = local.mqtt_vm ? ["mqtt"] : []

  # The TLS certificate chain and its key: two secrets, filled by the operator (README), never by
  # terraform, so the key never enters terraform's state.
  mqtt_tls_secrets = {
    cert = "${var.name}-mqtt-tls-cert"
    key  = "${var.name}-mqtt-tls-key"
  }

  # The load balancer's ports, IoT Core's two: 8883, and 443 for sites that let only HTTPS's
  # port out. Both reach ingest's one TLS listener (IOTCORE_PUBLISH below).
  mqtt_vm_ports = ["8883", "443"]

  # The port of the HTTP listener, which answers /healthz and /readyz (ROLE=device serves them
  # on PORT). Only the health checkers may reach it.
  mqtt_vm_health_port = "8080"

  # Sources of Google's health checks: those of the passthrough load balancer and those of the
  # group's autohealing (https://cloud.google.com/load-balancing/docs/health-check-concepts).
  # The single VM (no load balancer) is checked by autohealing only, from the same ranges.
  health_check_ranges = ["35.191.0.0/16", "130.211.0.0/22", "209.85.152.0/22", "209.85.204.0/22"]

  # ingest's settings on the VMs (/etc/iotcore/ingest.env, passed to the container as they are).
  mqtt_vm_env = {
    ROLE = "device"
    # The one TLS listener; the host publishes 8883 and 443 to it.
    MQTT_ADDR            = "0.0.0.0:8883"
    MQTT_TLS_CERT        = "/run/iotcore/tls/cert.pem"
    MQTT_TLS_KEY         = "/run/iotcore/tls/key.pem"
    MQTT_MAX_CONNECTIONS = var.mqtt_max_connections
    # Devices behind one NAT share an address; IoT Core had no such cap.
    MAX_CONNECTIONS_PER_ADDRESS = var.mqtt_max_connections_per_address
    PORT                        = local.mqtt_vm_health_port
    REGISTRY                    = local.registry_url
    SINK                        = "pubsub"
    DELIVERY_TOPIC              = google_pubsub_topic.c2d.id
    GOOGLE_CLOUD_PROJECT        = var.project_id
    LOG_FORMAT                  = local.log_format
    # Longer than Cloud Run's 8: a PUBACK still owed waits up to PUBLISH_TIMEOUT_SECS (10) for
    # Pub/Sub. ingest then needs at most 2 x 15 + 1 s for its listeners and sessions.
    DRAIN_TIMEOUT_SECS  = "15"
    ACTIVITY_FLUSH_SECS = var.mqtt_activity_flush_seconds
  }

  # The boot script's settings (/etc/iotcore/boot.env; documented in infra/vm/start.sh).
  mqtt_vm_boot = {
    IOTCORE_PROJECT         = var.project_id
    IOTCORE_TLS_CERT_SECRET = local.mqtt_tls_secrets.cert
    IOTCORE_TLS_KEY_SECRET  = local.mqtt_tls_secrets.key
    IOTCORE_TLS_DIR         = "/run/iotcore/tls"
    IOTCORE_ENV_FILE        = "/etc/iotcore/ingest.env"
    IOTCORE_IMAGE           = var.image
    IOTCORE_PUBLISH         = "8883:8883 443:8883 8080:8080"
    # docker stop's grace period; iotcore-ingest.service's TimeoutStopSec (100) is above it.
    IOTCORE_STOP_SECONDS = "90"
  }
}

# --- Identity -------------------------------------------------------------------------------------

resource "google_service_account" "mqtt" {
  count = local.mqtt_vm ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-mqtt"
  display_name = "ingest MQTT bridge VMs (${var.name})"
  description  = "Runs the MQTT/TLS bridge VMs: reads their TLS secrets, verifies devices against the registry, publishes to the event and state topics."

  depends_on = [google_project_service.apis]
}

# What the device service has (iam.tf), plus the two secrets, the image and the VMs' logs.
resource "google_pubsub_topic_iam_member" "mqtt_publishes" {
  for_each = { for k, v in { events = google_pubsub_topic.events.id, state = google_pubsub_topic.state.id } : k => v if local.mqtt_vm }

  project = var.project_id
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = google_service_account.mqtt[0].member
}

resource "google_project_iam_member" "mqtt_registry" {
  count = local.mqtt_vm ? 1 : 0

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.mqtt[0].member
}

# Container-Optimized OS's logging agent sends the container's JSON log lines to Cloud Logging.
# Log writing has no narrower grant than the project.
resource "google_project_iam_member" "mqtt_logs" {
  count = local.mqtt_vm ? 1 : 0

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.mqtt[0].member
}

resource "google_artifact_registry_repository_iam_member" "mqtt_pulls" {
  count = local.mqtt_vm ? 1 : 0

  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.mqtt[0].member
}

# --- TLS certificate and key ----------------------------------------------------------------------

resource "google_secret_manager_secret" "mqtt_tls" {
  for_each = { for k, v in local.mqtt_tls_secrets : k => v if local.mqtt_secrets }

  project   = var.project_id
  secret_id = each.value
  labels    = { purpose = "mqtt-tls-${each.key}" }

  # Kept in the deployment's region, like the messages.
  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.apis]
}

# Secret accessor on exactly these two secrets, for the VMs only.
resource "google_secret_manager_secret_iam_member" "mqtt_tls" {
  for_each = { for k, v in google_secret_manager_secret.mqtt_tls : k => v if local.mqtt_vm }

  project   = var.project_id
  secret_id = each.value.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.mqtt[0].member
}

# --- Network --------------------------------------------------------------------------------------

# A network of its own: no default rules (SSH from anywhere and the like), only the two below.
resource "google_compute_network" "mqtt" {
  count = local.mqtt_vm ? 1 : 0

  project                 = var.project_id
  name                    = "${var.name}-mqtt"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.apis]
}

# Behind the load balancer the VMs have no external address: Private Google Access takes them to
# Pub/Sub, Firestore, Secret Manager, Artifact Registry and Cloud Logging, and Container-Optimized
# OS needs nothing else (no package installs), so there is no Cloud NAT to pay for. The single VM
# has its reserved address, but still reaches Google's APIs the same way.
resource "google_compute_subnetwork" "mqtt" {
  count = local.mqtt_vm ? 1 : 0

  project                  = var.project_id
  name                     = "${var.name}-mqtt"
  region                   = var.region
  network                  = google_compute_network.mqtt[0].id
  ip_cidr_range            = "10.20.0.0/24"
  private_ip_google_access = true

  # Sampled flow logs, for tracing a device's connection problems; a tenth of the flows in
  # 10-minute records keeps them to a few MB a month for the reference fleet.
  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.1
    metadata             = "EXCLUDE_ALL_METADATA"
  }
}

# The device ports, from anywhere by default. A passthrough load balancer does not proxy: packets
# reach the VMs with the device's own source address, so no narrower "load balancer range"
# exists to allow (and the single VM is reached directly). Only 8883 and 443, to the VMs'
# service account only; narrow var.mqtt_device_source_ranges if the fleet's networks are known.
resource "google_compute_firewall" "mqtt_devices" {
  count = local.mqtt_vm ? 1 : 0

  project                 = var.project_id
  name                    = "${var.name}-mqtt-devices"
  network                 = google_compute_network.mqtt[0].id
  direction               = "INGRESS"
  source_ranges           = var.mqtt_device_source_ranges
  target_service_accounts = [google_service_account.mqtt[0].email]

  allow {
    protocol = "tcp"
    ports    = local.mqtt_vm_ports
  }
}

# The health port, from Google's health checkers only.
resource "google_compute_firewall" "mqtt_health_checks" {
  count = local.mqtt_vm ? 1 : 0

  project                 = var.project_id
  name                    = "${var.name}-mqtt-health-checks"
  network                 = google_compute_network.mqtt[0].id
  direction               = "INGRESS"
  source_ranges           = local.health_check_ranges
  target_service_accounts = [google_service_account.mqtt[0].email]

  allow {
    protocol = "tcp"
    ports    = [local.mqtt_vm_health_port]
  }
}

# --- The VMs --------------------------------------------------------------------------------------

# The newest Container-Optimized OS when terraform runs: a newer one makes a new template, which
# the group rolls out like an image update (surge first, drained).
data "google_compute_image" "cos" {
  count = local.mqtt_vm ? 1 : 0

  project = "cos-cloud"
  family  = "cos-stable"
}

data "google_compute_zones" "mqtt" {
  count = local.mqtt_vm ? 1 : 0

  project = var.project_id
  region  = var.region
  status  = "UP"
}

resource "google_compute_instance_template" "mqtt" {
  # The single VM of var.mqtt_vm_load_balancer = false is what devices connect to, so it needs a
  # public address; it opens only 8883 and 443 to devices and 8080 to Google's health checkers
  # (the two firewall rules above). Behind the load balancer the template has no access_config.
  #checkov:skip=CKV_GCP_40:only the single-VM path (no load balancer) has an external address, the MQTT endpoint itself
  count = local.mqtt_vm ? 1 : 0

  project      = var.project_id
  name_prefix  = "${var.name}-mqtt-"
  description  = "Self-hosted IoT Core: the MQTT/TLS bridge (ingest, ROLE=device)"
  machine_type = var.mqtt_machine_type

  disk {
    source_image = data.google_compute_image.cos[0].self_link
    boot         = true
    auto_delete  = true
    disk_type    = "pd-balanced"
    disk_size_gb = 10

    dynamic "disk_encryption_key" {
      for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
      content {
        kms_key_self_link = disk_encryption_key.value
      }
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.mqtt[0].id

    # Behind the load balancer: no access_config, no external address (the load balancer's is
    # the only public one). The single VM: an external address on nic0, which the per-instance
    # config below replaces with the reserved google_compute_address.mqtt.
    dynamic "access_config" {
      for_each = local.mqtt_vm_single ? ["nic0"] : []
      content {
        network_tier = "PREMIUM"
      }
    }
  }

  # The cloud-platform scope with a service account that holds only the roles above: IAM, not
  # scopes, is what limits the VMs (Google's advice for service accounts on VMs).
  service_account {
    email  = google_service_account.mqtt[0].email
    scopes = ["cloud-platform"]
  }

  metadata = {
    user-data = templatefile("${path.module}/vm/cloud-init.yaml", {
      boot_env            = join("\n", [for k, v in local.mqtt_vm_boot : "${k}=${v}"])
      ingest_env          = join("\n", [for k, v in local.mqtt_vm_env : "${k}=${v}"])
      start_sh            = file("${path.module}/vm/start.sh")
      ingest_service      = file("${path.module}/vm/iotcore-ingest.service")
      tls_refresh_service = file("${path.module}/vm/iotcore-tls-refresh.service")
      tls_refresh_timer   = file("${path.module}/vm/iotcore-tls-refresh.timer")
    })
    # Nobody logs in with project-wide SSH keys; OS Login (IAM) if anyone must.
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    serial-port-enable     = "false"
    # The container's stdout (ingest's JSON lines) to Cloud Logging.
    google-logging-enabled    = "true"
    google-monitoring-enabled = "false"
    # Updates arrive as new templates (data.google_compute_image.cos), never as reboots.
    cos-update-strategy = "update_disabled"
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  scheduling {
    automatic_restart   = true
    on_host_maintenance = "MIGRATE"
    provisioning_model  = "STANDARD"
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [
    google_project_iam_member.mqtt_registry,
    google_project_iam_member.mqtt_logs,
    google_pubsub_topic_iam_member.mqtt_publishes,
    google_artifact_registry_repository_iam_member.mqtt_pulls,
    google_secret_manager_secret_iam_member.mqtt_tls,
    google_project_iam_member.delivery_bus,
    google_pubsub_topic_iam_member.delivery_bus_publishes,
    google_pubsub_topic_iam_member.delivery_bus_attaches,
    google_kms_crypto_key_iam_member.compute,
  ]
}

# Load-balancer health: ready to serve (the registry answers).
resource "google_compute_region_health_check" "mqtt_ready" {
  count = local.mqtt_vm_lb ? 1 : 0

  project             = var.project_id
  name                = "${var.name}-mqtt-ready"
  region              = var.region
  check_interval_sec  = 5
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 3

  http_health_check {
    port         = local.mqtt_vm_health_port
    request_path = "/readyz"
  }
}

# Autohealing: the process answers at all. A slower, laxer check, so a registry outage takes
# VMs out of the load balancer without recreating them. Both groups (regional and single) use it.
resource "google_compute_health_check" "mqtt_alive" {
  count = local.mqtt_vm ? 1 : 0

  project             = var.project_id
  name                = "${var.name}-mqtt-alive"
  check_interval_sec  = 10
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 6

  http_health_check {
    port         = local.mqtt_vm_health_port
    request_path = "/healthz"
  }
}

locals {
  # Up to three zones: a zone's outage leaves the others serving. A rolling update's surge must
  # be 0 or at least the number of zones.
  # (A for expression, not `local.mqtt_vm ? …[0] : []`: nothing indexes an empty data source.)
  mqtt_zones = flatten([for z in data.google_compute_zones.mqtt : slice(sort(z.names), 0, min(3, length(z.names)))])
}

resource "google_compute_region_instance_group_manager" "mqtt" {
  count = local.mqtt_vm_lb ? 1 : 0

  project                   = var.project_id
  name                      = "${var.name}-mqtt"
  region                    = var.region
  base_instance_name        = "${var.name}-mqtt"
  distribution_policy_zones = local.mqtt_zones
  wait_for_instances        = false

  version {
    instance_template = google_compute_instance_template.mqtt[0].self_link_unique
  }

  # A VM whose ingest stops answering /healthz is recreated; the first check waits for the boot
  # (Container-Optimized OS, the image pull, the certificate fetch: about a minute on e2-small).
  auto_healing_policies {
    health_check      = google_compute_health_check.mqtt_alive[0].id
    initial_delay_sec = 300
  }

  # A new template (image, settings, Container-Optimized OS) rolls out surge first: new VMs come
  # up and pass their health check before any old one goes. An old VM leaves the load balancer
  # (connection_draining_timeout_sec below), then gets SIGTERM: ingest closes every MQTT
  # connection with a reason on the device's errors topic after its owed PUBACKs, and the devices
  # reconnect to the VMs that remain.
  update_policy {
    type                           = "PROACTIVE"
    minimal_action                 = "REPLACE"
    most_disruptive_allowed_action = "REPLACE"
    replacement_method             = "SUBSTITUTE"
    instance_redistribution_type   = "NONE"
    max_surge_fixed                = length(local.mqtt_zones)
    max_unavailable_fixed          = 0
  }

  # A VM recreated by autohealing gets the newest template.
  instance_lifecycle_policy {
    force_update_on_repair = "YES"
  }
}

# CPU-based autoscaling. Idle MQTT connections cost memory, not CPU (19 KB each, BENCHMARKS.md),
# so size var.mqtt_min_instances for the fleet (devices / var.mqtt_max_connections, plus one)
# and let CPU add VMs for bursts: reconnect storms after a restart, busy devices.
resource "google_compute_region_autoscaler" "mqtt" {
  count = local.mqtt_vm_lb ? 1 : 0

  project = var.project_id
  name    = "${var.name}-mqtt"
  region  = var.region
  target  = google_compute_region_instance_group_manager.mqtt[0].id

  autoscaling_policy {
    min_replicas    = var.mqtt_min_instances
    max_replicas    = var.mqtt_max_instances
    cooldown_period = 120

    cpu_utilization {
      target = var.mqtt_cpu_target
    }

    # Scaling in drops every connection of the VM it removes: at most one VM per 10 minutes.
    scale_in_control {
      time_window_sec = 600
      max_scaled_in_replicas {
        fixed = 1
      }
    }
  }
}

# --- Load balancer --------------------------------------------------------------------------------

resource "google_compute_region_backend_service" "mqtt" {
  count = local.mqtt_vm_lb ? 1 : 0

  project               = var.project_id
  name                  = "${var.name}-mqtt"
  region                = var.region
  load_balancing_scheme = "EXTERNAL"
  protocol              = "TCP"
  session_affinity      = "NONE"
  health_checks         = [google_compute_region_health_check.mqtt_ready[0].id]

  # A VM leaving the group (update, scale-in) first stops getting new connections for this long,
  # then is shut down and closes the connections it still holds.
  connection_draining_timeout_sec = 60

  backend {
    group          = google_compute_region_instance_group_manager.mqtt[0].instance_group
    balancing_mode = "CONNECTION"
  }
}

# The load balancer's address when var.mqtt_static_ip; the single VM's, always (it is what keeps
# the DNS record right when autohealing or an update recreates the VM).
resource "google_compute_address" "mqtt" {
  count = (local.mqtt_vm_lb && var.mqtt_static_ip) || local.mqtt_vm_single ? 1 : 0

  project      = var.project_id
  name         = "${var.name}-mqtt"
  region       = var.region
  address_type = "EXTERNAL"
  network_tier = "PREMIUM"
  description  = "The MQTT bridge's address: the A record of var.mqtt_hostname."
}

resource "google_compute_forwarding_rule" "mqtt" {
  count = local.mqtt_vm_lb ? 1 : 0

  project               = var.project_id
  name                  = "${var.name}-mqtt"
  region                = var.region
  load_balancing_scheme = "EXTERNAL"
  ip_protocol           = "TCP"
  ports                 = local.mqtt_vm_ports
  backend_service       = google_compute_region_backend_service.mqtt[0].id
  ip_address            = one(google_compute_address.mqtt[*].address) # null: an ephemeral one
  network_tier          = "PREMIUM"

  lifecycle {
    precondition {
      condition     = var.mqtt_hostname != null
      error_message = "mqtt_vm_enabled needs mqtt_hostname: the name devices connect to, which the TLS certificate in the ${var.name}-mqtt-tls-cert secret must carry."
    }
  }
}

# --- Without the load balancer: one VM with its own reserved address ------------------------------

# A zonal group of one, so that autohealing (the same /healthz check) and template updates still
# recreate the VM; no autoscaler (a stateful group cannot have one, and one VM holds the fleet
# this path is for). The VM's name and address come from the per-instance config below, which
# creates it: the provider creates that instance with createInstances, which raises the target
# size from 0 to 1, so target_size stays 0 here and terraform ignores the change (with 1, the
# group would make a second, unnamed VM first: terraform-provider-google issues #15911, #20662).
resource "google_compute_instance_group_manager" "mqtt_single" {
  count = local.mqtt_vm_single ? 1 : 0

  project            = var.project_id
  name               = "${var.name}-mqtt"
  zone               = local.mqtt_zones[0]
  base_instance_name = "${var.name}-mqtt"
  target_size        = 0
  wait_for_instances = false

  version {
    instance_template = google_compute_instance_template.mqtt[0].self_link_unique
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.mqtt_alive[0].id
    initial_delay_sec = 300
  }

  # A new template replaces the VM in place: a stateful group must RECREATE (same name, same
  # address), so no surge. The VM gets SIGTERM and drains as behind the load balancer; devices
  # are disconnected until the new VM has booted (about a minute) and reconnect to the same
  # address.
  update_policy {
    type                           = "PROACTIVE"
    minimal_action                 = "REPLACE"
    most_disruptive_allowed_action = "REPLACE"
    replacement_method             = "RECREATE"
    max_surge_fixed                = 0
    max_unavailable_fixed          = 1
  }

  instance_lifecycle_policy {
    force_update_on_repair = "YES"
  }

  lifecycle {
    ignore_changes = [target_size]
  }
}

# The VM, named, with the reserved address on nic0 as preserved state: autohealing, updates and
# recreation give it back the same address. NEVER: the address is terraform's
# (google_compute_address.mqtt), not the group's to delete.
resource "google_compute_per_instance_config" "mqtt" {
  count = local.mqtt_vm_single ? 1 : 0

  project                          = var.project_id
  zone                             = google_compute_instance_group_manager.mqtt_single[0].zone
  instance_group_manager           = google_compute_instance_group_manager.mqtt_single[0].name
  name                             = "${var.name}-mqtt-0"
  minimal_action                   = "REPLACE"
  most_disruptive_allowed_action   = "REPLACE"
  remove_instance_state_on_destroy = true

  preserved_state {
    external_ip {
      interface_name = "nic0"
      auto_delete    = "NEVER"
      ip_address {
        address = google_compute_address.mqtt[0].self_link
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.mqtt_hostname != null
      error_message = "mqtt_vm_enabled needs mqtt_hostname: the name devices connect to, which the TLS certificate in the ${var.name}-mqtt-tls-cert secret must carry."
    }
  }
}

# --- The name -------------------------------------------------------------------------------------

locals {
  # Where mqtt_hostname points: the forwarding rule's address, or the single VM's. null until
  # the VMs exist.
  mqtt_bridge_ip = local.mqtt_vm_lb ? one(google_compute_forwarding_rule.mqtt[*].ip_address) : one(google_compute_address.mqtt[*].address)
}

# The A record, when the domain's zone is in Cloud DNS in this project; otherwise create the
# record output mqtt_dns_record names wherever the domain is served.
resource "google_dns_record_set" "mqtt" {
  count = local.mqtt_vm && var.mqtt_dns_zone != null ? 1 : 0

  project      = var.project_id
  managed_zone = var.mqtt_dns_zone
  name         = "${var.mqtt_hostname}."
  type         = "A"
  ttl          = 300
  rrdatas      = [local.mqtt_bridge_ip]
}
