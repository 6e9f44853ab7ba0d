variable "name" {
  description = "Prefix of every resource this module creates (lower case, digits and dashes)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 20 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "project" {
  description = "The Google Cloud project brizo's jobs and data live in."
  type        = string
}

variable "region" {
  description = "The region of the buckets, the subnetwork and the Batch jobs (data and compute stay together)."
  type        = string
}

variable "subnet_cidr" {
  description = "Address range of the job subnetwork (no external addresses; Google APIs through Private Google Access)."
  type        = string
  default     = "10.42.0.0/24"
}

variable "machine_type" {
  description = "Machine type of the job VMs."
  type        = string
  default     = "e2-standard-2"
}

variable "source_image" {
  description = "Boot image of the job VMs: one Google Batch supports for container runnables (its Docker and agent)."
  type        = string
  default     = "projects/batch-custom-image/global/images/family/batch-debian-11-official"
}

variable "kms_key_name" {
  description = "A Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) to encrypt the buckets and job disks with; empty: the module makes one."
  type        = string
  default     = ""
}

variable "staging_expiration_days" {
  description = "Staged job files (plans, signed URLs, outputs on their way) older than this are deleted."
  type        = number
  default     = 7
}

variable "results_expiration_days" {
  description = "Results older than this are deleted from the results bucket."
  type        = number
  default     = 365
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}
