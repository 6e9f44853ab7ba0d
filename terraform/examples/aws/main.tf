# A publisher's brizo on AWS: the module, in an existing VPC's private subnets.
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

module "brizo" {
  source     = "../../modules/aws"
  name       = "brizo-example"
  vpc_id     = var.vpc_id
  subnet_ids = var.subnet_ids
  tags       = { "project" = "brizo" }
}

output "brizo" {
  value = module.brizo
}
