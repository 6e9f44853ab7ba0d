# Where jobs run: a managed Batch compute environment in the given private subnets, behind a
# security group that admits nothing and lets out only HTTPS inside the VPC (the S3 and ECR
# endpoints the publisher's VPC provides).

data "aws_vpc" "this" {
  id = var.vpc_id
}

resource "aws_security_group" "jobs" {
  name        = "${var.name}-jobs"
  description = "brizo job instances: no inbound, HTTPS to VPC endpoints only"
  vpc_id      = var.vpc_id
  egress {
    description = "HTTPS to the VPC's endpoints (S3, ECR, CloudWatch Logs)"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.this.cidr_block]
  }
  tags = var.tags
}

resource "aws_batch_compute_environment" "jobs" {
  name = "${var.name}-jobs"
  type = "MANAGED"
  compute_resources {
    type               = "EC2"
    max_vcpus          = var.max_vcpus
    min_vcpus          = 0
    instance_type      = var.instance_types
    instance_role      = aws_iam_instance_profile.instance.arn
    subnets            = var.subnet_ids
    security_group_ids = [aws_security_group.jobs.id]
    tags               = var.tags
    launch_template {
      launch_template_id = aws_launch_template.jobs.id
      version            = aws_launch_template.jobs.latest_version
    }
  }
  tags = var.tags
}

resource "aws_batch_job_queue" "jobs" {
  name     = "${var.name}-jobs"
  state    = "ENABLED"
  priority = 1
  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.jobs.arn
  }
  tags = var.tags
}

# Every job host gets brizo-runner, the static binary job containers start with (the service's
# job definitions bind it in). The publisher uploads the release binary once to
# s3://<results bucket>/runner/brizo-runner (the `runner_upload_url` output); hosts copy it at boot.
# IMDSv2 with a hop limit of 1: the host reads its role, containers (one hop further) cannot.
locals {
  runner_host_path = "/opt/brizo/brizo-runner"
  runner_key       = "runner/brizo-runner"
}

resource "aws_launch_template" "jobs" {
  name = "${var.name}-jobs"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      encrypted   = true
      kms_key_id  = aws_kms_key.brizo.arn
      volume_size = 30
      volume_type = "gp3"
    }
  }
  # Batch wants MIME multi-part user data.
  user_data = base64encode(<<-EOT
    MIME-Version: 1.0
    Content-Type: multipart/mixed; boundary="==BRIZO=="

    --==BRIZO==
    Content-Type: text/x-shellscript; charset="us-ascii"

    #!/bin/bash
    set -euo pipefail
    mkdir -p /opt/brizo
    aws s3 cp "s3://${aws_s3_bucket.results.id}/${local.runner_key}" ${local.runner_host_path}
    chmod 0755 ${local.runner_host_path}

    --==BRIZO==--
  EOT
  )
  tags = var.tags
}
