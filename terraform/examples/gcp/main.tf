# A publisher's brizo on Google Cloud: the module in one project and region.
terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

variable "project" {
  type = string
}

variable "region" {
  type    = string
  default = "europe-west4"
}

module "brizo" {
  source  = "../../modules/gcp"
  name    = "brizo-example"
  project = var.project
  region  = var.region
  labels  = { "project" = "brizo" }
}

output "brizo" {
  value = module.brizo
}
