variable "name" {
  description = "Prefix of every resource this module creates (lower case, digits and dashes)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 32 lower-case letters, digits or dashes."
  }
}

variable "subnet_ids" {
  description = "Private subnets the job instances run in. Jobs get no inbound access and, without a NAT, no way out: their data comes through presigned S3 URLs via VPC endpoints."
  type        = list(string)
}

variable "vpc_id" {
  description = "VPC of the subnets."
  type        = string
}

variable "max_vcpus" {
  description = "Ceiling of the Batch compute environment."
  type        = number
  default     = 16
}

variable "instance_types" {
  description = "EC2 instance types Batch may use for jobs."
  type        = list(string)
  default     = ["optimal"]
}

variable "log_retention_days" {
  description = "How long job logs are kept in CloudWatch Logs."
  type        = number
  default     = 365
}

variable "results_expiration_days" {
  description = "Results older than this are deleted from the results bucket."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
