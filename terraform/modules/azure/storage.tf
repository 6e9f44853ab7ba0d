# Data, results and staging live in one storage account of the publisher's, in the data's
# region: never public (no anonymous blobs, no public network: only the private endpoint), TLS
# 1.2 or later, infrastructure encryption on top of the platform's, no Shared Key at all (brizo
# signs SAS URLs with user delegation keys of its managed identity), versioning and soft
# delete, every read, write and delete logged.

resource "azurerm_storage_account" "brizo" {
  # checkov:skip=CKV_AZURE_206:Data stays in its region by design (compute-to-data): zone-redundant, never geo-replicated.
  # checkov:skip=CKV2_AZURE_1:Platform-managed keys with infrastructure (double) encryption; a customer-managed key in Key Vault is the publisher's choice to add.
  # checkov:skip=CKV_AZURE_33:Queue service unused; the blob service's logs are the diagnostic setting below.
  name                              = "${var.name}data"
  resource_group_name               = var.resource_group_name
  location                          = var.location
  account_tier                      = "Standard"
  account_replication_type          = "ZRS"
  account_kind                      = "StorageV2"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  public_network_access_enabled     = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  local_user_enabled                = false
  infrastructure_encryption_enabled = true
  cross_tenant_replication_enabled  = false
  tags                              = var.tags

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices", "Logging", "Metrics"]
  }

  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = 30
    }
    container_delete_retention_policy {
      days = 30
    }
  }

  sas_policy {
    expiration_period = "1.00:00:00"
    expiration_action = "Log"
  }
}

resource "azurerm_storage_container" "data" {
  # checkov:skip=CKV2_AZURE_21:Blob reads, writes and deletes are logged by azurerm_monitor_diagnostic_setting.blob; storage insights would need the account key, which this account disables.
  name                  = "data"
  storage_account_id    = azurerm_storage_account.brizo.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "results" {
  # checkov:skip=CKV2_AZURE_21:Blob reads, writes and deletes are logged by azurerm_monitor_diagnostic_setting.blob; storage insights would need the account key, which this account disables.
  name                  = "results"
  storage_account_id    = azurerm_storage_account.brizo.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "staging" {
  # checkov:skip=CKV2_AZURE_21:Blob reads, writes and deletes are logged by azurerm_monitor_diagnostic_setting.blob; storage insights would need the account key, which this account disables.
  name                  = "staging"
  storage_account_id    = azurerm_storage_account.brizo.id
  container_access_type = "private"
}

# The runner binary the pool's start task installs (upload it once: see the outputs).
resource "azurerm_storage_container" "runner" {
  # checkov:skip=CKV2_AZURE_21:Blob reads, writes and deletes are logged by azurerm_monitor_diagnostic_setting.blob; storage insights would need the account key, which this account disables.
  name                  = "runner"
  storage_account_id    = azurerm_storage_account.brizo.id
  container_access_type = "private"
}

resource "azurerm_storage_management_policy" "brizo" {
  storage_account_id = azurerm_storage_account.brizo.id

  rule {
    name    = "staging-expires"
    enabled = true
    filters {
      prefix_match = ["staging/"]
      blob_types   = ["blockBlob"]
    }
    actions {
      base_blob {
        delete_after_days_since_creation_greater_than = var.staging_expiration_days
      }
      version {
        delete_after_days_since_creation = var.staging_expiration_days
      }
    }
  }

  rule {
    name    = "results-expire"
    enabled = true
    filters {
      prefix_match = ["results/"]
      blob_types   = ["blockBlob"]
    }
    actions {
      base_blob {
        delete_after_days_since_creation_greater_than = var.results_expiration_days
      }
      version {
        delete_after_days_since_creation = var.results_expiration_days
      }
    }
  }
}

resource "azurerm_log_analytics_workspace" "brizo" {
  name                = "${var.name}-logs"
  resource_group_name = var.resource_group_name
  location            = var.location
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = var.tags
}

resource "azurerm_monitor_diagnostic_setting" "blob" {
  name                       = "${var.name}-blob"
  target_resource_id         = "${azurerm_storage_account.brizo.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.brizo.id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}

# brizo's own identity: it stages and collects, publishes results, reads the data it routes,
# and signs user delegation SAS URLs; nothing else of the account.
resource "azurerm_role_assignment" "service_staging" {
  scope                = azurerm_storage_container.staging.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = var.service_principal_id
}

resource "azurerm_role_assignment" "service_results" {
  scope                = azurerm_storage_container.results.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = var.service_principal_id
}

resource "azurerm_role_assignment" "service_data" {
  scope                = azurerm_storage_container.data.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = var.service_principal_id
}

resource "azurerm_role_assignment" "service_delegator" {
  scope                = azurerm_storage_account.brizo.id
  role_definition_name = "Storage Blob Delegator"
  principal_id         = var.service_principal_id
}
