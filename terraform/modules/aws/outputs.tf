# These map onto brizo's configuration: `brizo config from-terraform OUTPUTS.json` writes it
# (see terraform/README.md).

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

output "staging_url" {
  value = "s3://${aws_s3_bucket.results.id}/staging"
}

output "runner_host_path" {
  value = local.runner_host_path
}

output "runner_upload_url" {
  value = "s3://${aws_s3_bucket.results.id}/${local.runner_key}"
}

output "job_definition_prefix" {
  value = var.name
}
