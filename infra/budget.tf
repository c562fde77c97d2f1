# Optional budget alert on the billing account, scoped to this project, as IoT Core's guides
# advised. Created only when var.billing_account is set. It e-mails the billing account's
# administrators; it does not cap spending (max instances in run.tf is the brake).

resource "google_billing_budget" "project" {
  count = var.billing_account == null ? 0 : 1

  billing_account = var.billing_account
  display_name    = "${var.name} (${var.project_id})"

  budget_filter {
    projects = ["projects/${data.google_project.this.number}"]
  }

  amount {
    specified_amount {
      # Must be the billing account's currency; the API refuses a mismatch.
      units = tostring(var.budget_amount)
    }
  }

  threshold_rules {
    threshold_percent = 0.5
  }
  threshold_rules {
    threshold_percent = 0.9
  }
  threshold_rules {
    threshold_percent = 1.0
  }
  # Warn before the money is spent, when the month's forecast passes the budget.
  threshold_rules {
    threshold_percent = 1.0
    spend_basis       = "FORECASTED_SPEND"
  }

  depends_on = [google_project_service.apis]
}
