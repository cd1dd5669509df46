# A Cloud Storage bucket for walbridge repositories: uniform bucket-level access, public access
# prevention, optional CMEK, lifecycle rules per namespace. IAM for the three actors is in iam.tf.

locals {
  # Object names, as src/archive/layout.ts names them, under the repository root:
  # "<prefix>/<namespace>/..." or, with an empty prefix, "<namespace>/...".
  # test/unit/terraform.test.ts renders these and compares them with layout.ts.
  root = var.prefix == "" ? "" : "${var.prefix}/"
  layout = {
    for ns, cfg in var.namespaces : ns => {
      namespace = "${local.root}${ns}/"
      identity  = "${local.root}${ns}/identity.json"
      wal       = "${local.root}${ns}/wal/"
      history   = "${local.root}${ns}/history/"
      trigger   = "${local.root}${ns}/trigger/"
      stream    = "${local.root}${ns}/stream/"
      check     = "${local.root}${ns}/check/"
    }
  }

  repo_url = var.prefix == "" ? "gs://${google_storage_bucket.this.name}" : "gs://${google_storage_bucket.this.name}/${var.prefix}"

  # Namespaces whose WAL expires; 0 and null mean never.
  wal_expiry = { for ns, cfg in var.namespaces : ns => cfg.wal_retention_days if coalesce(cfg.wal_retention_days, 0) > 0 }

  # Namespaces whose streamed chunks expire; 0 means never.
  stream_expiry = { for ns, cfg in var.namespaces : ns => cfg.stream_retention_days if coalesce(cfg.stream_retention_days, 0) > 0 }

  grant_kms = var.kms_key_name != null && var.grant_kms_to_storage_agent
}

# The bucket encrypts with the key on the writer's behalf through the Cloud Storage service agent.
data "google_storage_project_service_account" "this" {
  count   = local.grant_kms ? 1 : 0
  project = var.project
}

resource "google_kms_crypto_key_iam_member" "storage_agent" {
  count = local.grant_kms ? 1 : 0

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.this[0].email_address}"
}

resource "google_storage_bucket" "this" {
  project       = var.project
  name          = var.bucket_name
  location      = var.location
  storage_class = var.storage_class
  force_destroy = var.force_destroy
  labels        = var.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = var.versioning
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "soft_delete_policy" {
    for_each = var.soft_delete_retention_days == null ? [] : [var.soft_delete_retention_days]
    content {
      retention_duration_seconds = soft_delete_policy.value * 86400
    }
  }

  # WAL expiry: only <namespace>/wal/ (segments, .partial, .backup). Never history/ (timeline
  # history files: recovery needs them), identity.json or trigger/.
  dynamic "lifecycle_rule" {
    for_each = local.wal_expiry
    content {
      action {
        type = "Delete"
      }
      condition {
        age            = lifecycle_rule.value
        matches_prefix = [local.layout[lifecycle_rule.key].wal]
      }
    }
  }

  # Streamed chunks: only <namespace>/stream/. walbridge stream deletes a segment's chunks once it is
  # archived whole; expiry removes those a streamer that died or was stopped for good left behind
  # (of no use once their segment is archived or the failover is over).
  dynamic "lifecycle_rule" {
    for_each = local.stream_expiry
    content {
      action {
        type = "Delete"
      }
      condition {
        age            = lifecycle_rule.value
        matches_prefix = [local.layout[lifecycle_rule.key].stream]
      }
    }
  }

  # walbridge check's probes (<namespace>/check/): an upload a store that does not check uploads took,
  # which check could not remove. Of no use to anyone after a day.
  dynamic "lifecycle_rule" {
    for_each = local.layout
    content {
      action {
        type = "Delete"
      }
      condition {
        age            = 1
        matches_prefix = [lifecycle_rule.value.check]
      }
    }
  }

  # Per namespace: abort XML API multipart uploads left incomplete after a day.
  dynamic "lifecycle_rule" {
    for_each = local.layout
    content {
      action {
        type = "AbortIncompleteMultipartUpload"
      }
      condition {
        age            = 1
        matches_prefix = [lifecycle_rule.value.namespace]
      }
    }
  }

  # With versioning: delete noncurrent versions (deleted, expired or cleaned-up objects) after a while.
  dynamic "lifecycle_rule" {
    for_each = var.versioning ? local.layout : {}
    content {
      action {
        type = "Delete"
      }
      condition {
        with_state                 = "ARCHIVED"
        days_since_noncurrent_time = var.noncurrent_version_retention_days
        matches_prefix             = [lifecycle_rule.value.namespace]
      }
    }
  }

  # With versioning: a deleted chunk (a copy of part of an archived segment) is worth nothing, and a
  # busy streamer deletes thousands a day: their noncurrent versions go after a day; so do check's probes.
  dynamic "lifecycle_rule" {
    for_each = var.versioning ? local.layout : {}
    content {
      action {
        type = "Delete"
      }
      condition {
        with_state                 = "ARCHIVED"
        days_since_noncurrent_time = 1
        matches_prefix             = [lifecycle_rule.value.stream, lifecycle_rule.value.check]
      }
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_agent]
}
