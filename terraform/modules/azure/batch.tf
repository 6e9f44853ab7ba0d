# A Batch account whose pool runs containers on nodes with no public address, in the jobs
# subnet; its nodes carry a user-assigned identity that can read the runner's container (and
# pull from the registry, when one is given) and nothing else: tasks reach data and results
# only through the SAS URLs brizo gives each of them. The start task installs the runner where
# the backend's `runner_host_path` says. One Batch job holds one task per brizo job.

locals {
  runner_host_path = "/opt/brizo/brizo-runner"
  runner_blob      = "brizo-runner"
}

resource "azurerm_user_assigned_identity" "pool" {
  name                = "${var.name}-pool"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

resource "azurerm_role_assignment" "pool_runner" {
  scope                = azurerm_storage_container.runner.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.pool.principal_id
}

resource "azurerm_role_assignment" "pool_registry" {
  count                = var.container_registry_id == "" ? 0 : 1
  scope                = var.container_registry_id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.pool.principal_id
}

resource "azurerm_batch_account" "brizo" {
  # checkov:skip=CKV_AZURE_76:Batch keeps only task metadata here (no data); platform-managed keys. A Key Vault key is the publisher's choice to add.
  name                          = "${var.name}batch"
  resource_group_name           = var.resource_group_name
  location                      = var.location
  pool_allocation_mode          = "BatchService"
  public_network_access_enabled = true
  # brizo authenticates with Microsoft Entra ID tokens of its identity (the role below). Shared
  # Key, whose account key gives full control of the account, only when asked for.
  allowed_authentication_modes = var.batch_shared_key ? ["AAD", "SharedKey"] : ["AAD"]
  tags                         = var.tags

  network_profile {
    account_access {
      default_action = "Deny"
      dynamic "ip_rule" {
        for_each = var.service_ip_ranges
        content {
          ip_range = ip_rule.value
          action   = "Allow"
        }
      }
    }
  }
}

# brizo's own identity on the Batch data plane: read the pool, add, read, terminate and delete
# the tasks of its job (and their files). Azure Batch Job Submitter is the built-in role with
# that and no more (no pool, account or key changes), on this one account.
resource "azurerm_role_assignment" "service_batch" {
  scope                = azurerm_batch_account.brizo.id
  role_definition_name = "Azure Batch Job Submitter"
  principal_id         = var.service_principal_id
}

resource "azurerm_monitor_diagnostic_setting" "batch" {
  name                       = "${var.name}-batch"
  target_resource_id         = azurerm_batch_account.brizo.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.brizo.id

  enabled_log {
    category = "ServiceLogs"
  }
}

resource "azurerm_batch_pool" "brizo" {
  name                           = "${var.name}-pool"
  resource_group_name            = var.resource_group_name
  account_name                   = azurerm_batch_account.brizo.name
  vm_size                        = var.vm_size
  node_agent_sku_id              = "batch.node.ubuntu 22.04"
  target_node_communication_mode = "Simplified"
  max_tasks_per_node             = 1

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.pool.id]
  }

  storage_image_reference {
    publisher = "microsoft-dsvm"
    offer     = "ubuntu-hpc"
    sku       = "2204"
    version   = "latest"
  }

  container_configuration {
    type = "DockerCompatible"
    dynamic "container_registries" {
      for_each = var.container_registry_id == "" ? [] : [var.container_registry_id]
      content {
        registry_server           = "${element(split("/", container_registries.value), 8)}.azurecr.io"
        user_assigned_identity_id = azurerm_user_assigned_identity.pool.id
      }
    }
  }

  network_configuration {
    subnet_id                        = azurerm_subnet.jobs.id
    public_address_provisioning_type = "NoPublicIPAddresses"
  }

  fixed_scale {
    target_dedicated_nodes = var.nodes
  }

  start_task {
    command_line       = "/bin/sh -c 'install -D -m 0755 \"$AZ_BATCH_TASK_WORKING_DIR/${local.runner_blob}\" ${local.runner_host_path}'"
    wait_for_success   = true
    task_retry_maximum = 3

    user_identity {
      auto_user {
        elevation_level = "Admin"
        scope           = "Task"
      }
    }

    resource_file {
      http_url                  = "${azurerm_storage_account.brizo.primary_blob_endpoint}${azurerm_storage_container.runner.name}/${local.runner_blob}"
      file_path                 = local.runner_blob
      user_assigned_identity_id = azurerm_user_assigned_identity.pool.id
    }
  }

  depends_on = [azurerm_subnet_network_security_group_association.jobs, azurerm_private_endpoint.blob]
}

resource "azurerm_batch_job" "brizo" {
  name          = "${var.name}-jobs"
  batch_pool_id = azurerm_batch_pool.brizo.id
}
