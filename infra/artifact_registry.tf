# Where the ingest image is pushed and where Cloud Run pulls it from: a private Docker repository
# in the same region (pulls from the same region are free and fast on cold start).

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = var.name
  format        = "DOCKER"
  description   = "ingest images for the self-hosted IoT Core (${var.name})"
  kms_key_name  = var.kms_key_name # opt-in customer-managed key, as for the topics (kms.tf)

  docker_config {
    # A tag always means the same image: what was reviewed is what runs. Tag by version or commit.
    immutable_tags = true
  }

  # Keep storage (and cost) bounded: the ten newest images stay for rollbacks, older ones go
  # after 30 days.
  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"

    most_recent_versions {
      keep_count = 10
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"

    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.artifact_registry]
}
