# An S3 bucket for walbridge repositories: private, TLS only, encrypted, with lifecycle rules per
# namespace. IAM for the three actors (primary, standby, operator) is in iam.tf.

locals {
  # Object keys, as src/archive/layout.ts names them, under the repository root:
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

  repo_url    = var.prefix == "" ? "s3://${aws_s3_bucket.this.bucket}" : "s3://${aws_s3_bucket.this.bucket}/${var.prefix}"
  kms_key_arn = var.encryption != "SSE-KMS" ? null : (var.kms_key_arn != null ? var.kms_key_arn : aws_kms_key.this[0].arn)

  # Namespaces whose WAL expires; 0 and null mean never.
  wal_expiry = { for ns, cfg in var.namespaces : ns => cfg.wal_retention_days if coalesce(cfg.wal_retention_days, 0) > 0 }

  # Per namespace, the days after which streamed chunks expire (0: never); a rule on stream/ exists
  # where they expire, and with versioning everywhere (see the rule).
  stream_rules = { for ns, cfg in var.namespaces : ns => coalesce(cfg.stream_retention_days, 0) if coalesce(cfg.stream_retention_days, 0) > 0 || var.versioning }
}

resource "aws_s3_bucket" "this" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    # ACLs disabled: the bucket owner owns every object, whoever wrote it.
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_kms_key" "this" {
  count = var.encryption == "SSE-KMS" && var.kms_key_arn == null ? 1 : 0

  description             = "walbridge WAL archive in s3://${var.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_key_deletion_window_days
  tags                    = var.tags
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.encryption == "SSE-KMS" ? "aws:kms" : "AES256"
      kms_master_key_id = local.kms_key_arn
    }
    # An S3 Bucket Key cuts KMS requests (and their cost) to a fraction; it is ignored for SSE-S3.
    bucket_key_enabled = var.encryption == "SSE-KMS"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  # Absent when versioning is off: S3 cannot return a bucket to "never versioned" anyway.
  count  = var.versioning ? 1 : 0
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  # Per namespace: abort multipart uploads left incomplete (a crashed archive-push) after a day and,
  # with versioning, delete noncurrent versions after noncurrent_version_expiration_days.
  dynamic "rule" {
    for_each = local.layout
    content {
      id     = "walbridge-${rule.key}"
      status = "Enabled"

      filter {
        prefix = rule.value.namespace
      }

      abort_incomplete_multipart_upload {
        days_after_initiation = 1
      }

      dynamic "noncurrent_version_expiration" {
        for_each = var.versioning ? [var.noncurrent_version_expiration_days] : []
        content {
          noncurrent_days = noncurrent_version_expiration.value
        }
      }

      # With versioning, %r cleanup leaves delete markers behind; remove them once alone. (A namespace
      # with WAL expiry needs no such rule: an expiration in days removes expired delete markers too.)
      dynamic "expiration" {
        for_each = var.versioning && !contains(keys(local.wal_expiry), rule.key) ? [true] : []
        content {
          expired_object_delete_marker = expiration.value
        }
      }
    }
  }

  # WAL expiry: only <namespace>/wal/ (segments, .partial, .backup). Never history/ (timeline
  # history files: recovery needs them), identity.json or trigger/.
  dynamic "rule" {
    for_each = local.wal_expiry
    content {
      id     = "walbridge-${rule.key}-wal-expiry"
      status = "Enabled"

      filter {
        prefix = local.layout[rule.key].wal
      }

      expiration {
        days = rule.value
      }
    }
  }

  # Streamed chunks: only <namespace>/stream/. walbridge stream deletes a segment's chunks once it is
  # archived whole; expiry removes those a streamer that died or was stopped for good left behind
  # (of no use once their segment is archived or the failover is over). With versioning, a deleted
  # chunk (a copy of part of an archived segment) is worth nothing: its noncurrent version goes after
  # a day and then its delete marker, so a busy streamer's thousands a day do not pile up.
  dynamic "rule" {
    for_each = local.stream_rules
    content {
      id     = "walbridge-${rule.key}-stream"
      status = "Enabled"

      filter {
        prefix = local.layout[rule.key].stream
      }

      dynamic "expiration" {
        for_each = rule.value > 0 ? [rule.value] : []
        content {
          days = expiration.value
        }
      }

      # Chunks that never expire (a rule only for versioning): remove lone delete markers explicitly
      # (an expiration in days removes them by itself).
      dynamic "expiration" {
        for_each = rule.value > 0 ? [] : [true]
        content {
          expired_object_delete_marker = expiration.value
        }
      }

      dynamic "noncurrent_version_expiration" {
        for_each = var.versioning ? [1] : []
        content {
          noncurrent_days = noncurrent_version_expiration.value
        }
      }
    }
  }

  # walbridge check's probes (<namespace>/check/): an upload a store that does not check uploads took,
  # which check could not remove. Of no use to anyone after a day.
  dynamic "rule" {
    for_each = local.layout
    content {
      id     = "walbridge-${rule.key}-check"
      status = "Enabled"

      filter {
        prefix = rule.value.check
      }

      expiration {
        days = 1
      }

      dynamic "noncurrent_version_expiration" {
        for_each = var.versioning ? [1] : []
        content {
          noncurrent_days = noncurrent_version_expiration.value
        }
      }
    }
  }

  # Rules that expire versions must not be applied before versioning is.
  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "bucket" {
  source_policy_documents = var.bucket_policy_documents

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid     = "DenyTlsOlderThan12"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json

  # S3 refuses a policy while the public access block is being changed.
  depends_on = [aws_s3_bucket_public_access_block.this]
}
