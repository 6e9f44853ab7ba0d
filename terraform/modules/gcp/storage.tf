# Buckets: the publisher's data, brizo's results, the jobs' staging (short-lived), the runner
# (read by job VMs at boot) and the access logs of the others. All uniform access, public
# access prevented, versioned, encrypted with the module's (or the given) KMS key.

data "google_storage_project_service_account" "gcs" {
  project = var.project
}

locals {
  kms_key     = var.kms_key_name != "" ? var.kms_key_name : google_kms_crypto_key.brizo[0].id
  runner_key  = "runner/brizo-runner"
  runner_path = "/var/lib/brizo/brizo-runner"
}

resource "google_kms_key_ring" "brizo" {
  count    = var.kms_key_name == "" ? 1 : 0
  project  = var.project
  name     = "${var.name}-keys"
  location = var.region
}

resource "google_kms_crypto_key" "brizo" {
  count           = var.kms_key_name == "" ? 1 : 0
  name            = "${var.name}-data"
  key_ring        = google_kms_key_ring.brizo[0].id
  rotation_period = "7776000s"
  labels          = var.labels
  lifecycle {
    prevent_destroy = true
  }
}

# GCS encrypts objects with the key on the project's behalf; Compute Engine the job disks.
resource "google_kms_crypto_key_iam_member" "gcs" {
  crypto_key_id = local.kms_key
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

data "google_project" "this" {
  project_id = var.project
}

resource "google_kms_crypto_key_iam_member" "compute" {
  crypto_key_id = local.kms_key
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@compute-system.iam.gserviceaccount.com"
}

resource "google_storage_bucket" "logs" {
  # checkov:skip=CKV_GCP_62:This is the access-log bucket itself; logging it into itself would loop.
  project                     = var.project
  name                        = "${var.name}-access-logs-${var.project}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels
  versioning {
    enabled = true
  }
  encryption {
    default_kms_key_name = local.kms_key
  }
  lifecycle_rule {
    condition {
      age = 400
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_kms_crypto_key_iam_member.gcs]
}

resource "google_storage_bucket" "data" {
  project                     = var.project
  name                        = "${var.name}-data-${var.project}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = true
  }
  encryption {
    default_kms_key_name = local.kms_key
  }
  logging {
    log_bucket        = google_storage_bucket.logs.name
    log_object_prefix = "data/"
  }
  depends_on = [google_kms_crypto_key_iam_member.gcs]
}

resource "google_storage_bucket" "results" {
  project                     = var.project
  name                        = "${var.name}-results-${var.project}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = true
  }
  encryption {
    default_kms_key_name = local.kms_key
  }
  logging {
    log_bucket        = google_storage_bucket.logs.name
    log_object_prefix = "results/"
  }
  lifecycle_rule {
    condition {
      age = var.results_expiration_days
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_kms_crypto_key_iam_member.gcs]
}

# Each job's plan, its signed URLs and what it sends back: brizo deletes them once a job is
# settled; the lifecycle rule removes whatever a lost job left.
resource "google_storage_bucket" "staging" {
  project                     = var.project
  name                        = "${var.name}-staging-${var.project}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = true
  }
  encryption {
    default_kms_key_name = local.kms_key
  }
  logging {
    log_bucket        = google_storage_bucket.logs.name
    log_object_prefix = "staging/"
  }
  lifecycle_rule {
    condition {
      age = var.staging_expiration_days
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_kms_crypto_key_iam_member.gcs]
}

# The static runner job VMs install at boot (upload it to runner_upload_url).
resource "google_storage_bucket" "runner" {
  project                     = var.project
  name                        = "${var.name}-runner-${var.project}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = true
  }
  encryption {
    default_kms_key_name = local.kms_key
  }
  logging {
    log_bucket        = google_storage_bucket.logs.name
    log_object_prefix = "runner/"
  }
  depends_on = [google_kms_crypto_key_iam_member.gcs]
}
