# These map onto brizo's configuration (see terraform/README.md):
#   [[backends]] kind = "aws-batch", job_queue, job_role, log_group, region, near = [data bucket]
#   [outputs] results_url

output "region" {
  value = data.aws_region.current.region
}

output "job_queue" {
  value = aws_batch_job_queue.jobs.arn
}

output "job_role" {
  value = aws_iam_role.job.arn
}

output "log_group" {
  value = aws_cloudwatch_log_group.jobs.name
}

output "data_url" {
  value = "s3://${aws_s3_bucket.data.id}"
}

output "results_url" {
  value = "s3://${aws_s3_bucket.results.id}/brizo"
}

output "service_instance_profile" {
  value = aws_iam_instance_profile.service.name
}

output "kms_key" {
  value = aws_kms_key.brizo.arn
}
