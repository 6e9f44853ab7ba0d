variable "name" {
  description = "Prefix of every resource this module creates (lower case letters and digits: storage and Batch account names allow nothing else)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]{3,16}$", var.name))
    error_message = "name must be 3 to 16 lower-case letters or digits."
  }
}

variable "resource_group_name" {
  description = "The resource group everything goes in."
  type        = string
}

variable "location" {
  description = "The region: the data's, where the jobs run too."
  type        = string
}

variable "address_space" {
  description = "The virtual network of the pool and the private endpoints."
  type        = string
  default     = "10.42.0.0/16"
}

variable "vm_size" {
  description = "The size of the pool's nodes."
  type        = string
  default     = "Standard_D2s_v5"
}

variable "nodes" {
  description = "Dedicated nodes in the pool."
  type        = number
  default     = 1
}

variable "service_principal_id" {
  description = "Object id of the identity brizo runs as (the service host's managed identity): it gets what it needs on the containers and the Batch account (Azure Batch Job Submitter) and nothing more."
  type        = string
}

variable "batch_shared_key" {
  description = "Also let the Batch account take Shared Key (the account key, full control of the account), for brizo's auth = \"shared_key\". Off: brizo uses Microsoft Entra ID tokens of service_principal_id."
  type        = bool
  default     = false
}

variable "container_registry_id" {
  description = "An Azure Container Registry the pool pulls job images from with its identity (AcrPull), or empty."
  type        = string
  default     = ""
}

variable "staging_expiration_days" {
  description = "Staged job files older than this are deleted (brizo deletes them itself once a job is over)."
  type        = number
  default     = 2
}

variable "results_expiration_days" {
  description = "Results older than this are deleted from the results container."
  type        = number
  default     = 365
}

variable "log_retention_days" {
  description = "How long storage and Batch logs are kept."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "service_ip_ranges" {
  description = "Public addresses (CIDR) brizo reaches the Batch account's API from; every other address is refused."
  type        = list(string)
  default     = []
}
