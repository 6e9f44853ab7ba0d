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
