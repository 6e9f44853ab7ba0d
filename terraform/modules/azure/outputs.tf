# These map onto brizo's configuration: `brizo config from-terraform OUTPUTS.json` writes it.
# No secret is among them: brizo authenticates to Batch and Blob as service_principal_id, with
# Microsoft Entra ID tokens from the standard Azure credential chain.

output "batch_url" {
  value = "https://${azurerm_batch_account.brizo.account_endpoint}"
}

output "batch_account" {
  value = azurerm_batch_account.brizo.name
}

output "pool_id" {
  value = azurerm_batch_pool.brizo.name
}

output "job_id" {
  value = azurerm_batch_job.brizo.name
}

output "storage_account" {
  value = azurerm_storage_account.brizo.name
}

output "staging_container" {
  value = azurerm_storage_container.staging.name
}

output "data_url" {
  value = "az://${azurerm_storage_account.brizo.name}/${azurerm_storage_container.data.name}"
}

output "results_url" {
  value = "${azurerm_storage_account.brizo.primary_blob_endpoint}${azurerm_storage_container.results.name}/brizo"
}

output "runner_host_path" {
  value = local.runner_host_path
}

output "runner_upload_url" {
  value = "${azurerm_storage_account.brizo.primary_blob_endpoint}${azurerm_storage_container.runner.name}/${local.runner_blob}"
}

output "pool_identity" {
  value = azurerm_user_assigned_identity.pool.id
}

output "batch_auth" {
  description = "How brizo authenticates to Batch: Microsoft Entra ID (the role on the account), or Shared Key when batch_shared_key is set."
  value       = var.batch_shared_key ? "shared_key" : "entra"
}
