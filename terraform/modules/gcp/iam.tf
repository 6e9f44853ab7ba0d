# Two service accounts. The job VMs' account can report to Batch, write logs and read the
# runner: nothing else (a job reaches its data and staging only through the signed URLs of its
# plan). The service's account runs brizo: it creates and deletes Batch jobs that run as the
# job account, reads their logs, stages and publishes, and signs URLs (as itself).

resource "google_service_account" "jobs" {
  project      = var.project
  account_id   = "${var.name}-jobs"
  display_name = "brizo job VMs (${var.name})"
}

resource "google_project_iam_member" "jobs_agent" {
  project = var.project
  role    = "roles/batch.agentReporter"
  member  = "serviceAccount:${google_service_account.jobs.email}"
}

resource "google_project_iam_member" "jobs_logs" {
  project = var.project
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.jobs.email}"
}

resource "google_storage_bucket_iam_member" "jobs_runner" {
  bucket = google_storage_bucket.runner.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.jobs.email}"
}

resource "google_service_account" "service" {
  project      = var.project
  account_id   = "${var.name}-service"
  display_name = "brizo service (${var.name})"
}

resource "google_project_iam_member" "service_batch" {
  project = var.project
  role    = "roles/batch.jobsEditor"
  member  = "serviceAccount:${google_service_account.service.email}"
}

resource "google_project_iam_member" "service_logs" {
  project = var.project
  role    = "roles/logging.viewer"
  member  = "serviceAccount:${google_service_account.service.email}"
}

# Batch jobs run as the job account: the service may hand that one account to Batch, no other.
resource "google_service_account_iam_member" "service_uses_jobs" {
  service_account_id = google_service_account.jobs.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.service.email}"
}

# V4 signed URLs from the metadata server's credentials go through signBlob, as itself.
resource "google_service_account_iam_member" "service_signs" {
  service_account_id = google_service_account.service.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.service.email}"
}

resource "google_storage_bucket_iam_member" "service_data" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.service.email}"
}

resource "google_storage_bucket_iam_member" "service_results" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.service.email}"
}

resource "google_storage_bucket_iam_member" "service_staging" {
  bucket = google_storage_bucket.staging.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.service.email}"
}
