# The job VMs' network: one subnetwork with Private Google Access and no route to the
# internet (the default routes are deleted; only Google's private API range is routed), no
# external addresses, firewall rules that let nothing in and nothing out but HTTPS to that
# range, and private DNS that sends *.googleapis.com there. The algorithm can reach GCS (its
# signed URLs) and Google's APIs, nothing else.

locals {
  # private.googleapis.com
  google_private_range = "199.36.153.8/30"
}

resource "google_compute_network" "jobs" {
  project                         = var.project
  name                            = "${var.name}-jobs"
  auto_create_subnetworks         = false
  delete_default_routes_on_create = true
}

resource "google_compute_subnetwork" "jobs" {
  project                  = var.project
  name                     = "${var.name}-jobs"
  region                   = var.region
  network                  = google_compute_network.jobs.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# The one route out: Google's private API range, through Google's own network.
resource "google_compute_route" "google_apis" {
  project          = var.project
  name             = "${var.name}-google-apis"
  network          = google_compute_network.jobs.name
  dest_range       = local.google_private_range
  next_hop_gateway = "default-internet-gateway"
  priority         = 100
}

resource "google_compute_firewall" "deny_egress" {
  project            = var.project
  name               = "${var.name}-deny-egress"
  network            = google_compute_network.jobs.name
  direction          = "EGRESS"
  priority           = 65000
  destination_ranges = ["0.0.0.0/0"]
  deny {
    protocol = "all"
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "google_apis" {
  project            = var.project
  name               = "${var.name}-google-apis"
  network            = google_compute_network.jobs.name
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = [local.google_private_range]
  allow {
    protocol = "tcp"
    ports    = ["443"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "deny_ingress" {
  project       = var.project
  name          = "${var.name}-deny-ingress"
  network       = google_compute_network.jobs.name
  direction     = "INGRESS"
  priority      = 65000
  source_ranges = ["0.0.0.0/0"]
  deny {
    protocol = "all"
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_dns_managed_zone" "googleapis" {
  # checkov:skip=CKV_GCP_16:A private zone seen only from the job network; DNSSEC signs public zones.
  project     = var.project
  name        = "${var.name}-googleapis"
  dns_name    = "googleapis.com."
  description = "googleapis.com through Private Google Access for the brizo job network"
  visibility  = "private"
  labels      = var.labels
  private_visibility_config {
    networks {
      network_url = google_compute_network.jobs.id
    }
  }
}

resource "google_dns_record_set" "private_googleapis" {
  project      = var.project
  managed_zone = google_dns_managed_zone.googleapis.name
  name         = "private.googleapis.com."
  type         = "A"
  ttl          = 300
  rrdatas      = ["199.36.153.8", "199.36.153.9", "199.36.153.10", "199.36.153.11"]
}

resource "google_dns_record_set" "googleapis" {
  project      = var.project
  managed_zone = google_dns_managed_zone.googleapis.name
  name         = "*.googleapis.com."
  type         = "CNAME"
  ttl          = 300
  rrdatas      = ["private.googleapis.com."]
}
