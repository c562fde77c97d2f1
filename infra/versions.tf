# Versions: the Terraform CLI and the google provider this configuration is written and checked
# against. `terraform init` records the exact provider build in .terraform.lock.hcl; commit that
# file in your own deployment repository so every apply uses the same provider.

terraform {
  # 1.5 brought `check` blocks and the validation features variables.tf relies on.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # The 6.x line: invoker_iam_disabled on Cloud Run v2 services (GA in 6.x) is what keeps the
      # device endpoint public without an allUsers IAM binding. Moving to 7.x is a deliberate
      # step: read the provider's upgrade guide first.
      version = "~> 6.30"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  # The budget API (budget.tf) needs a quota project when you run terraform with your own user
  # credentials; without these two lines it answers 403 "requires a quota project".
  user_project_override = true
  billing_project       = var.project_id

  default_labels = {
    app        = "iotcore-rs"
    managed-by = "terraform"
  }
}
