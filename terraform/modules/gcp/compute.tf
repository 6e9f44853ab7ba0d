# The job VMs Batch creates for brizo's jobs: from this template (brizo names it in every job's
# allocation policy), in the job subnetwork without an external address, as the job account,
# with the runner installed by the startup script before Batch starts the job's container.

resource "google_compute_instance_template" "jobs" {
  project      = var.project
  name_prefix  = "${var.name}-jobs-"
  region       = var.region
  machine_type = var.machine_type
  labels       = var.labels

  disk {
    source_image = var.source_image
    boot         = true
    auto_delete  = true
    disk_size_gb = 30
    disk_encryption_key {
      kms_key_self_link = local.kms_key
    }
  }

  # No access_config: no external address.
  network_interface {
    subnetwork = google_compute_subnetwork.jobs.id
  }

  service_account {
    email  = google_service_account.jobs.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  can_ip_forward = false

  metadata = {
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    serial-port-enable     = "false"
    # The runner, from the runner bucket through Private Google Access, with the VM's token.
    startup-script = <<-SCRIPT
      #!/bin/sh
      set -eu
      token=$(curl -sf -H 'Metadata-Flavor: Google' \
        http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token \
        | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
      mkdir -p "$(dirname ${local.runner_path})"
      curl -sf -H "Authorization: Bearer $token" -o ${local.runner_path}.partial \
        "https://storage.googleapis.com/storage/v1/b/${google_storage_bucket.runner.name}/o/${urlencode(local.runner_key)}?alt=media"
      chmod 0755 ${local.runner_path}.partial
      mv ${local.runner_path}.partial ${local.runner_path}
    SCRIPT
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [google_kms_crypto_key_iam_member.compute]
}
