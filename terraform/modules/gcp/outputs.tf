# These map onto brizo's configuration: `brizo config from-terraform OUTPUTS.json` writes it
# (see terraform/README.md).

output "project" {
  value = var.project
}

output "region" {
  value = var.region
}

output "network" {
  value = google_compute_network.jobs.id
}

output "subnetwork" {
  value = google_compute_subnetwork.jobs.id
}

output "instance_template" {
  value = google_compute_instance_template.jobs.self_link
}

output "job_service_account" {
  value = google_service_account.jobs.email
}

output "service_account" {
  value = google_service_account.service.email
}

output "data_url" {
  value = "gs://${google_storage_bucket.data.name}"
}

output "results_url" {
  value = "gs://${google_storage_bucket.results.name}/brizo"
}

output "staging_url" {
  value = "gs://${google_storage_bucket.staging.name}/jobs"
}

output "runner_host_path" {
  value = local.runner_path
}

output "runner_upload_url" {
  value = "gs://${google_storage_bucket.runner.name}/${local.runner_key}"
}

output "kms_key" {
  value = local.kms_key
}
