# Least privilege. The service may submit, follow and stop jobs on its own queue, read the
# data bucket, read and write the results bucket, and read job logs. Jobs themselves get no
# AWS permission at all: the runner in the container moves data only through presigned URLs
# the service hands it, so a job cannot reach anything it was not given.

data "aws_iam_policy_document" "service_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "service" {
  name               = "${var.name}-service"
  assume_role_policy = data.aws_iam_policy_document.service_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "service" {
  statement {
    sid       = "SubmitAndFollowJobs"
    actions   = ["batch:SubmitJob", "batch:TagResource"]
    resources = [aws_batch_job_queue.jobs.arn, "arn:aws:batch:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:job-definition/${var.name}-*"]
  }
  statement {
    sid       = "DefineJobsPerImage"
    actions   = ["batch:RegisterJobDefinition", "batch:DeregisterJobDefinition"]
    resources = ["arn:aws:batch:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:job-definition/${var.name}-*"]
  }
  statement {
    sid       = "StopJobs"
    actions   = ["batch:TerminateJob", "batch:CancelJob"]
    resources = ["arn:aws:batch:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:job/*"]
  }
  statement {
    # DescribeJobs and ListJobs do not support resource-level permissions; they only read.
    sid       = "ReadJobStates"
    actions   = ["batch:DescribeJobs", "batch:ListJobs", "batch:DescribeJobDefinitions"]
    resources = ["*"]
  }
  statement {
    sid       = "PassTheJobRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.job.arn]
  }
  statement {
    sid       = "ReadData"
    actions   = ["s3:GetObject", "s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn, "${aws_s3_bucket.data.arn}/*"]
  }
  statement {
    sid       = "WriteResults"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:AbortMultipartUpload"]
    resources = [aws_s3_bucket.results.arn, "${aws_s3_bucket.results.arn}/*"]
  }
  statement {
    sid       = "UseTheKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.brizo.arn]
  }
  statement {
    sid       = "ReadJobLogs"
    actions   = ["logs:GetLogEvents", "logs:FilterLogEvents"]
    resources = ["${aws_cloudwatch_log_group.jobs.arn}:*"]
  }
}

resource "aws_iam_role_policy" "service" {
  name   = "${var.name}-service"
  role   = aws_iam_role.service.id
  policy = data.aws_iam_policy_document.service.json
}

resource "aws_iam_instance_profile" "service" {
  name = "${var.name}-service"
  role = aws_iam_role.service.name
}

# The role job containers run with: deliberately empty.
data "aws_iam_policy_document" "job_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "job" {
  name               = "${var.name}-job"
  assume_role_policy = data.aws_iam_policy_document.job_assume.json
  tags               = var.tags
}

# The instances Batch starts run the ECS agent, which needs AWS's managed policy for it.
data "aws_iam_policy_document" "instance_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  name               = "${var.name}-batch-instance"
  assume_role_policy = data.aws_iam_policy_document.instance_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "instance" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "instance" {
  name = "${var.name}-batch-instance"
  role = aws_iam_role.instance.name
}

# Job hosts read the runner binary, nothing else of the buckets.
data "aws_iam_policy_document" "instance" {
  statement {
    sid       = "FetchTheRunner"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.results.arn}/${local.runner_key}"]
  }
  statement {
    sid       = "DecryptTheRunner"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.brizo.arn]
  }
}

resource "aws_iam_role_policy" "instance" {
  name   = "${var.name}-batch-instance"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.instance.json
}
