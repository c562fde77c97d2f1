# Inputs: what differs between deployments. Only project_id is required for the first apply;
# image, admin_invokers and the budget are added as the infra/README.md walk-through reaches them.
# Every default is explained beside it.

variable "project_id" {
  description = "Google Cloud project id to deploy into (an empty project with billing enabled is fine)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project id (6-30 characters: lower-case letters, digits, hyphens), not a project name or number."
  }
}

variable "region" {
  description = "Region for Cloud Run, Artifact Registry, the Pub/Sub message storage policy and (by default) Firestore. IoT Core's registries lived in us-central1, europe-west1 or asia-east1."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west1."
  }
}

variable "name" {
  description = "Prefix of every resource name (services, topics, service accounts, repository), so two deployments can share a project."
  type        = string
  default     = "iotcore"

  validation {
    # Service account ids are the tightest limit: 6-30 characters, and "-device" is appended.
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}[a-z0-9]$", var.name))
    error_message = "name must be 4-22 characters: a lower-case letter first, then lower-case letters, digits or hyphens."
  }
}

variable "image" {
  description = "Container image of ingest, e.g. us-central1-docker.pkg.dev/PROJECT/iotcore/ingest:TAG. Leave null on the first apply (it creates the repository to push to); the Cloud Run services are created once it is set. Later image updates belong to `gcloud run deploy` (see the lifecycle note in run.tf)."
  type        = string
  default     = null

  validation {
    condition     = var.image == null || can(regex("^[a-z0-9.-]+(:[0-9]+)?/[^ ]+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})$", var.image))
    error_message = "image must be a full image reference with a tag or a digest, e.g. us-central1-docker.pkg.dev/my-project/iotcore/ingest:0.1.0."
  }
}

variable "admin_invokers" {
  description = "Principals allowed to call the admin API (roles/run.invoker on the admin service only), e.g. [\"user:ops@example.com\", \"group:iot-admins@example.com\"]. Empty: nobody can call it until you add someone."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.admin_invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))])
    error_message = "Each admin invoker must be an IAM principal such as user:a@example.com, group:g@example.com or serviceAccount:sa@p.iam.gserviceaccount.com; allUsers and allAuthenticatedUsers are refused because the admin API must never be public."
  }
}

variable "admin_owners" {
  description = "Of the admin invokers, those who hold every permission of the admin API (ADMIN_OWNERS), e.g. [\"user:ops@example.com\"]; every other invoker holds only what registries' IAM policies grant (ingest iam add …). Empty: every invoker is an owner."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.admin_owners : can(regex("^(user|serviceAccount):[^@,]+@[^,]+$", m))])
    error_message = "Each admin owner must be user:EMAIL or serviceAccount:EMAIL: the admin API knows a caller by the email of its ID token, so groups and domains cannot name an owner."
  }
}

# --- Device endpoint sizing -------------------------------------------------------------------

variable "device_min_instances" {
  description = "Instances of the device endpoint kept warm. 0 (default) costs nothing at rest; the price is a cold start of about a second on the first request after idling. Set 1 for fleets that cannot retry (each warm instance bills around the clock; see the README's cost section)."
  type        = number
  default     = 0

  validation {
    condition     = var.device_min_instances >= 0 && var.device_min_instances <= 10 && floor(var.device_min_instances) == var.device_min_instances
    error_message = "device_min_instances must be a whole number from 0 to 10."
  }
}

variable "device_max_instances" {
  description = "Ceiling on device endpoint instances: the cost brake. At the default concurrency, 10 instances serve 2,500 requests in flight, far beyond what the default per-device limits of a few thousand devices need."
  type        = number
  default     = 10

  validation {
    condition     = var.device_max_instances >= 1 && var.device_max_instances <= 100 && floor(var.device_max_instances) == var.device_max_instances
    error_message = "device_max_instances must be a whole number from 1 to 100."
  }
}

variable "device_concurrency" {
  description = "Requests one device endpoint instance serves at once. A request spends its time waiting on Pub/Sub (the device is answered only after the publish), not on the CPU, so one vCPU handles many at once; 250 keeps instance count (and cost) low while leaving CPU headroom for the JWT checks that miss the token cache. Cloud Run's own default is 80."
  type        = number
  default     = 250

  validation {
    condition     = var.device_concurrency >= 1 && var.device_concurrency <= 1000
    error_message = "device_concurrency must be between 1 and 1000 (Cloud Run's limit)."
  }
}

variable "device_cpu" {
  description = "vCPUs per device endpoint instance. 1 is enough for the async server; fractional CPUs would force a concurrency of 1."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "4"], var.device_cpu)
    error_message = "device_cpu must be \"1\", \"2\" or \"4\"."
  }
}

variable "device_memory" {
  description = "Memory per device endpoint instance. 512Mi holds the token cache at its default capacity (100,000 entries of well under 1 KiB) plus the Pub/Sub publishers' batches with room to spare."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.device_memory))
    error_message = "device_memory must be a quantity such as 512Mi or 1Gi."
  }
}

variable "request_timeout_seconds" {
  description = "Cloud Run's request timeout for both services. Kept above ingest's own REQUEST_TIMEOUT_SECS (30) so that ingest, not Cloud Run's front end, answers a slow request, with Google's JSON error body that IoT Core clients understand."
  type        = number
  default     = 60

  validation {
    condition     = var.request_timeout_seconds > 30 && var.request_timeout_seconds <= 3600
    error_message = "request_timeout_seconds must be above 30 (ingest's own timeout) and at most 3600."
  }
}

variable "mqtt_websocket_max_seconds" {
  description = "How long Cloud Run keeps one MQTT-over-WebSocket connection (wss://…/mqtt on the device service) open: the device service's request timeout, 3600 (Cloud Run's maximum) by default. The device reconnects when it ends, as IoT Core devices reconnect at token expiry anyway (paho's loop does; the agent renews its token, and so its connection, at 75 % of token_lifetime). HTTP requests stay bounded by ingest's own REQUEST_TIMEOUT_SECS (30 s)."
  type        = number
  default     = 3600

  validation {
    condition     = var.mqtt_websocket_max_seconds >= 60 && var.mqtt_websocket_max_seconds <= 3600
    error_message = "mqtt_websocket_max_seconds must be between 60 and 3600 (Cloud Run's maximum)."
  }
}

# --- Registry store ---------------------------------------------------------------------------

variable "firestore_database" {
  description = "Firestore database (native mode) holding the registry. \"(default)\" is the only one that gets Firestore's free daily quota; use another name if the project already has a (default) database in Datastore mode or for another application."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be \"(default)\" or 4-63 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "firestore_location" {
  description = "Firestore location. null (default) means the same region as Cloud Run, which keeps every registry lookup in-region and uses the cheaper regional price; nam5 or eur3 buy multi-region durability at twice the price per operation. Cannot be changed after creation."
  type        = string
  default     = null
}

# --- Pub/Sub ------------------------------------------------------------------------------------

variable "max_delivery_attempts" {
  description = "Deliveries of a message to the example subscriptions before it is moved to the dead-letter topic. 10 rides out a subscriber's restart without letting one poison message block the backlog for days."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub's limits)."
  }
}

variable "message_retention" {
  description = "How long the example subscriptions (and the dead-letter subscription) keep unacknowledged messages. 7 days (604800s, Pub/Sub's maximum) gives a consumer a long weekend of downtime without losing readings; unacknowledged messages are kept at no storage charge."
  type        = string
  default     = "604800s"

  validation {
    # try(): Terraform evaluates both sides of &&, and tonumber fails on text that is not a number.
    condition     = can(regex("^[0-9]+s$", var.message_retention)) && try(tonumber(trimsuffix(var.message_retention, "s")) >= 600 && tonumber(trimsuffix(var.message_retention, "s")) <= 604800, false)
    error_message = "message_retention must be between 600s and 604800s (7 days), written in seconds such as 604800s."
  }
}

# --- Encryption ---------------------------------------------------------------------------------

variable "kms_key_name" {
  description = "Optional Cloud KMS key (projects/P/locations/REGION/keyRings/R/cryptoKeys/K, in the same region) to encrypt the Pub/Sub topics and the Artifact Registry repository with a customer-managed key. null (default): Google-managed encryption at rest. See the README before setting it: a disabled or destroyed key makes the messages and images unreadable."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a crypto key name: projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

# --- Budget -------------------------------------------------------------------------------------

variable "billing_account" {
  description = "Billing account id (XXXXXX-XXXXXX-XXXXXX) for the optional budget alert. null (default): no budget is created. Creating one needs roles/billing.costsManager on the billing account."
  type        = string
  default     = null

  validation {
    condition     = var.billing_account == null || can(regex("^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$", var.billing_account))
    error_message = "billing_account must look like 012345-6789AB-CDEF01."
  }
}

variable "budget_amount" {
  description = "Monthly budget for this project, in the billing account's currency. Billing administrators are e-mailed at 50%, 90% and 100% of it, and when the month's forecast passes 100%. A budget alerts; it never stops spending."
  type        = number
  default     = 20

  validation {
    condition     = var.budget_amount > 0
    error_message = "budget_amount must be positive."
  }
}

# --- MQTT over TLS (8883 and 443) on VMs: mqtt_vm.tf ------------------------------------------------

variable "mqtt_vm_enabled" {
  description = "Serve MQTT over TLS on 8883 and 443, as IoT Core's mqtt.googleapis.com did: a managed instance group of the ingest image (ROLE=device) behind a passthrough Network Load Balancer. false (default) changes nothing. true creates the two TLS secrets at once and the VMs once var.image is set; needs mqtt_hostname. See the README for the steps and the cost."
  type        = bool
  default     = false
}

variable "mqtt_hostname" {
  description = "The host name devices connect to for MQTT (their mqtt_bridge_hostname), e.g. mqtt.example.com. The TLS certificate in the NAME-mqtt-tls-cert secret must be issued for it. Required with mqtt_vm_enabled."
  type        = string
  default     = null

  validation {
    condition     = var.mqtt_hostname == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.mqtt_hostname))
    error_message = "mqtt_hostname must be a lower-case DNS name such as mqtt.example.com, without a trailing dot."
  }
}

variable "mqtt_dns_zone" {
  description = "Optional Cloud DNS managed zone (its name, in this project) serving mqtt_hostname's domain: terraform then creates the A record. null (default): create the record output mqtt_dns_record names wherever your domain's DNS is."
  type        = string
  default     = null
}

variable "mqtt_vm_load_balancer" {
  description = "Put the MQTT VMs behind a passthrough Network Load Balancer (true, default): a regional group of VMs in up to three zones, autoscaled, rolled over without dropping every device at once. false is the cheapest path for a small fleet: no load balancer (its forwarding rule alone is about $18 a month), one VM in one zone with a reserved external address that it keeps when autohealing or an update recreates it; a restart disconnects every device until the VM is back (about a minute). mqtt_min_instances, mqtt_max_instances, mqtt_cpu_target and mqtt_static_ip then do not apply. See the README's cost section for when to switch."
  type        = bool
  default     = true
}

variable "mqtt_static_ip" {
  description = "Reserve the load balancer's address (true, default), so it survives the forwarding rule being recreated and the DNS record stays right. An address in use by a forwarding rule is not billed; false uses an ephemeral one. Without the load balancer (mqtt_vm_load_balancer = false) the VM's address is always reserved."
  type        = bool
  default     = true
}

variable "mqtt_machine_type" {
  description = "Machine type of the MQTT VMs. e2-small (default; 2 GB, a 0.5 vCPU baseline that bursts to 2) holds ingest's default 10,000 connections with room to spare: 19 KB each and a few µs of CPU per message (BENCHMARKS.md). e2-micro (1 GB) is the free tier's VM in us-central1, us-east1 and us-west1."
  type        = string
  default     = "e2-small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*-[a-z0-9-]+$", var.mqtt_machine_type))
    error_message = "mqtt_machine_type must be a Compute Engine machine type such as e2-small."
  }
}

variable "mqtt_min_instances" {
  description = "Fewest MQTT VMs. The autoscaler adds VMs on CPU, but idle connections use memory, not CPU: keep at least ceil(devices / mqtt_max_connections), plus one to ride out an update or a lost zone without turning devices away. 1 (default) is the cheapest: a VM's replacement then drops every connection for the time devices take to reconnect."
  type        = number
  default     = 1

  validation {
    condition     = var.mqtt_min_instances >= 1 && var.mqtt_min_instances <= 100 && floor(var.mqtt_min_instances) == var.mqtt_min_instances
    error_message = "mqtt_min_instances must be a whole number from 1 to 100."
  }
}

variable "mqtt_max_instances" {
  description = "Most MQTT VMs the autoscaler may run: the cost brake."
  type        = number
  default     = 3

  validation {
    condition     = var.mqtt_max_instances >= 1 && var.mqtt_max_instances <= 100 && floor(var.mqtt_max_instances) == var.mqtt_max_instances
    error_message = "mqtt_max_instances must be a whole number from 1 to 100."
  }
}

variable "mqtt_cpu_target" {
  description = "Average CPU use the autoscaler keeps the MQTT VMs at (0.6: room for a reconnect storm while a new VM boots)."
  type        = number
  default     = 0.6

  validation {
    condition     = var.mqtt_cpu_target > 0 && var.mqtt_cpu_target <= 1
    error_message = "mqtt_cpu_target must be above 0 and at most 1."
  }
}

variable "mqtt_max_connections" {
  description = "MQTT connections one VM serves at once (MQTT_MAX_CONNECTIONS); more wait in the accept queue. 10,000 is ingest's default and what BENCHMARKS.md measured on one instance (19 KB each)."
  type        = number
  default     = 10000

  validation {
    condition     = var.mqtt_max_connections >= 1 && floor(var.mqtt_max_connections) == var.mqtt_max_connections
    error_message = "mqtt_max_connections must be a positive whole number."
  }
}

variable "mqtt_max_connections_per_address" {
  description = "Connections one source address may hold on a VM (MAX_CONNECTIONS_PER_ADDRESS; 0: no limit). The passthrough load balancer keeps devices' addresses, so a fleet behind one NAT shares one: raise this for such sites. 128 is ingest's default."
  type        = number
  default     = 128

  validation {
    condition     = var.mqtt_max_connections_per_address >= 0 && floor(var.mqtt_max_connections_per_address) == var.mqtt_max_connections_per_address
    error_message = "mqtt_max_connections_per_address must be a whole number, 0 for no limit."
  }
}

variable "mqtt_activity_flush_seconds" {
  description = "How often the MQTT VMs write devices' lastEventTime and friends to Firestore (ACTIVITY_FLUSH_SECS): one write per active device per interval. 60 (default) keeps IoT Core's promise that they lag by at most a minute, and for a device reporting once a minute costs a Firestore write per message ($0.90 per million); 3600 cuts that 60-fold, with the fields up to an hour old (README, cost)."
  type        = number
  default     = 60

  validation {
    condition     = var.mqtt_activity_flush_seconds >= 1 && var.mqtt_activity_flush_seconds <= 86400 && floor(var.mqtt_activity_flush_seconds) == var.mqtt_activity_flush_seconds
    error_message = "mqtt_activity_flush_seconds must be a whole number from 1 to 86400."
  }
}

variable "mqtt_device_source_ranges" {
  description = "Where devices may connect to 8883 and 443 from. 0.0.0.0/0 (default): anywhere, as IoT Core. The passthrough load balancer keeps devices' own addresses, so this is the one place to narrow them."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.mqtt_device_source_ranges) > 0 && alltrue([for r in var.mqtt_device_source_ranges : can(cidrhost(r, 0))])
    error_message = "mqtt_device_source_ranges must be a non-empty list of IPv4 CIDR ranges such as 203.0.113.0/24."
  }
}
