# A WAL archive bucket for walbridge, with one service account per database host. Copy this
# directory with ../../modules (see the module block), fill in terraform.tfvars, terraform apply,
# and run each VM as its host's account.

provider "google" {
  project = var.project
}

# A VM runs as one service account, and a host is often two things at once: a standby and, once
# promoted, a primary (archiving into the same namespace on a new timeline, or into another
# namespace). So: one account per host, granted as primary and as standby where the host is one.
resource "google_service_account" "host" {
  for_each = var.hosts

  project      = var.project
  account_id   = each.key
  display_name = "walbridge host ${each.key}"

  lifecycle {
    precondition {
      condition     = alltrue([for ns in concat(each.value.primary_of, each.value.standby_of) : contains(keys(var.namespaces), ns)])
      error_message = "Host ${each.key} names a namespace that is not in var.namespaces."
    }
  }
}

locals {
  # Built from the account ID rather than read from the resource: the module keys its bindings by
  # member, and keys must be known when planning.
  host_members = { for host in keys(var.hosts) : host => "serviceAccount:${host}@${var.project}.iam.gserviceaccount.com" }
}

module "walbridge" {
  # The module beside this example in walbridge's terraform/ directory: copy both, or point this
  # at your copy of the module (or a git:: URL with //terraform/modules/gcs?ref=<release tag>).
  source = "../../modules/gcs"

  project                    = var.project
  location                   = var.location
  bucket_name                = var.bucket_name
  prefix                     = var.prefix
  kms_key_name               = var.kms_key_name
  soft_delete_retention_days = var.soft_delete_retention_days

  namespaces = {
    for ns, cfg in var.namespaces : ns => {
      wal_retention_days    = cfg.wal_retention_days
      standby_cleanup       = cfg.standby_cleanup
      stream_retention_days = cfg.stream_retention_days
      primary_stream        = cfg.primary_stream
      standby_trigger_clear = true
      members = {
        primary  = [for host, h in var.hosts : local.host_members[host] if contains(h.primary_of, ns)]
        standby  = [for host, h in var.hosts : local.host_members[host] if contains(h.standby_of, ns)]
        operator = var.operators
      }
    }
  }

  # IAM refuses bindings for service accounts that do not exist yet.
  depends_on = [google_service_account.host]
}
