# A publisher's brizo on Azure: the module in an existing resource group, for a service whose
# managed identity is given.
terraform {
  required_version = ">= 1.5"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.0"
    }
  }
}

provider "azurerm" {
  features {}
}

variable "resource_group_name" {
  type = string
}

variable "location" {
  type    = string
  default = "westeurope"
}

variable "service_principal_id" {
  description = "Object id of the managed identity of the host brizo runs on."
  type        = string
}

variable "service_ip_ranges" {
  type    = list(string)
  default = []
}

module "brizo" {
  source               = "../../modules/azure"
  name                 = "brizoexample"
  resource_group_name  = var.resource_group_name
  location             = var.location
  service_principal_id = var.service_principal_id
  service_ip_ranges    = var.service_ip_ranges
  tags                 = { "project" = "brizo" }
}

output "brizo" {
  value = module.brizo
}
