# One IAM policy per namespace and actor, scoped to the namespace's keys:
#
#   primary  (archive-push)   reads and creates WAL, history and identity.json, create-if-absent only
#                             (If-None-Match: *): it can neither overwrite nor delete any of them.
#            (walbridge stream, run beside it with its credentials) creates, reads and deletes
#                             chunks under stream/, and only there: it removes a segment's chunks
#                             once archive-push has stored the segment whole.
#            (walbridge check) creates and deletes its probes under check/.
#   standby  (archive-fetch)  reads and lists the namespace, streamed chunks included; deletes WAL
#                             only with standby_cleanup (%r cleanup), trigger objects only with
#                             standby_trigger_clear.
#   operator (walbridge trigger smart|fast|clear|status) writes, reads and deletes trigger objects.
#
# s3:ListBucket (limited by s3:prefix) is there for more than listing: without it S3 answers a HEAD
# of a missing key with 403 instead of 404, and walbridge HEADs keys that do not exist yet all the
# time. For that decision S3 evaluates the condition with the object's key as s3:prefix.

locals {
  actors = ["primary", "standby", "operator"]

  # What the primary archives per namespace: written once, never replaced or deleted.
  primary_archive_objects = {
    for ns in keys(var.namespaces) : ns => [
      "${aws_s3_bucket.this.arn}/${local.layout[ns].wal}*",
      "${aws_s3_bucket.this.arn}/${local.layout[ns].history}*",
      "${aws_s3_bucket.this.arn}/${local.layout[ns].identity}",
    ]
  }

  policy_documents = {
    for ns in keys(var.namespaces) : ns => {
      primary  = data.aws_iam_policy_document.primary[ns].json
      standby  = data.aws_iam_policy_document.standby[ns].json
      operator = data.aws_iam_policy_document.operator[ns].json
    }
  }

  policies = {
    for p in flatten([
      for ns in keys(var.namespaces) : [
        for actor in local.actors : {
          key       = "${ns}/${actor}"
          namespace = ns
          actor     = actor
        }
      ]
    ]) : p.key => p
  }

  roles = {
    for r in flatten([
      for ns, cfg in var.namespaces : [
        for actor in local.actors : {
          key          = "${ns}/${actor}"
          namespace    = ns
          actor        = actor
          trust_policy = cfg.trust_policies[actor]
        } if cfg.trust_policies[actor] != null
      ]
    ]) : r.key => r
  }
}

data "aws_iam_policy_document" "primary" {
  for_each = var.namespaces

  statement {
    sid       = "ListNamespace"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.layout[each.key].namespace}*"]
    }
  }

  statement {
    # Reading back what is there. The multipart actions let a large upload be aborted and resumed.
    sid = "ReadWal"
    actions = [
      "s3:GetObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = local.primary_archive_objects[each.key]
  }

  # Writes to WAL, history and identity.json: create-if-absent only, so that these credentials,
  # stolen or driven by a buggy tool, cannot replace an archived file. s3:PutObject authorizes
  # PutObject, CompleteMultipartUpload, CreateMultipartUpload and UploadPart alike; S3 tells them
  # apart with s3:ObjectCreationOperation (true for the requests that make the object appear,
  # false for starting an upload and sending parts, which take no conditional header).
  # walbridge sends If-None-Match: * on PutObject and CompleteMultipartUpload (src/storage/s3.ts).
  # https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes-enforce.html
  statement {
    # PutObject and CompleteMultipartUpload, only with an If-None-Match header (S3 takes only "*").
    sid       = "CreateWalIfAbsent"
    actions   = ["s3:PutObject"]
    resources = local.primary_archive_objects[each.key]

    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["false"]
    }
  }

  statement {
    # CreateMultipartUpload and UploadPart: nothing exists until the conditional completion.
    sid       = "UploadWalParts"
    actions   = ["s3:PutObject"]
    resources = local.primary_archive_objects[each.key]

    condition {
      test     = "Bool"
      variable = "s3:ObjectCreationOperation"
      values   = ["false"]
    }
  }

  statement {
    # The same rule as a deny, for when this policy is attached to a principal that other
    # policies let write the bucket (policy_arns on a role of your own): an explicit deny wins.
    sid       = "NeverOverwriteWal"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = local.primary_archive_objects[each.key]

    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["true"]
    }

    condition {
      test     = "Bool"
      variable = "s3:ObjectCreationOperation"
      values   = ["true"]
    }
  }

  dynamic "statement" {
    # walbridge stream (primary_stream): chunks of the segment being written, created if absent,
    # read back, and deleted once the segment is archived whole (DeleteObjects needs
    # s3:DeleteObject on each key). A chunk is a copy of part of a segment that wal/ holds once it
    # is archived. (No s3:DeleteObjectVersion: with versioning, a delete leaves a noncurrent version.)
    for_each = each.value.primary_stream ? [local.layout[each.key].stream] : []
    content {
      sid = "StreamChunks"
      actions = [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
      ]
      resources = ["${aws_s3_bucket.this.arn}/${statement.value}*"]
    }
  }

  statement {
    # walbridge check (run with the primary's credentials): an upload whose Content-MD5 is wrong,
    # which S3 refuses; removed again where a store took it. Never WAL: nothing reads check/.
    sid       = "CheckProbes"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.this.arn}/${local.layout[each.key].check}*"]
  }

  dynamic "statement" {
    for_each = var.encryption == "SSE-KMS" ? [local.kms_key_arn] : []
    content {
      sid       = "UseBucketKey"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "standby" {
  for_each = var.namespaces

  statement {
    sid       = "ListNamespace"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.layout[each.key].namespace}*"]
    }
  }

  statement {
    # archive-fetch first checks that the bucket exists with a one-key listing of the repository
    # root (src/storage/s3.ts, checkBucket). Exactly that prefix, so no wildcard: "" when the
    # repository is the whole bucket.
    sid       = "CheckBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]

    condition {
      test     = "StringEquals"
      variable = "s3:prefix"
      values   = [local.root]
    }
  }

  statement {
    # Segments, history, identity.json, the trigger objects, and the streamed chunks a smart
    # failover restores (listed under stream/<segment>/ by ListNamespace above).
    sid       = "ReadNamespace"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.this.arn}/${local.layout[each.key].namespace}*"]
  }

  dynamic "statement" {
    # %r cleanup (DeleteObjects needs s3:DeleteObject on each key): WAL only, never history.
    for_each = each.value.standby_cleanup ? ["${aws_s3_bucket.this.arn}/${local.layout[each.key].wal}*"] : []
    content {
      sid       = "CleanupWal"
      actions   = ["s3:DeleteObject"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    # "walbridge trigger clear" as recovery_end_command of the standby being promoted.
    for_each = each.value.standby_trigger_clear ? ["${aws_s3_bucket.this.arn}/${local.layout[each.key].trigger}*"] : []
    content {
      sid       = "ClearTrigger"
      actions   = ["s3:DeleteObject"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.encryption == "SSE-KMS" ? [local.kms_key_arn] : []
    content {
      sid       = "UseBucketKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "operator" {
  for_each = var.namespaces

  statement {
    sid       = "ListTriggers"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.layout[each.key].trigger}*"]
    }
  }

  statement {
    # A new trigger replaces the old one: delete, then create-if-absent.
    sid       = "WriteTriggers"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.this.arn}/${local.layout[each.key].trigger}*"]
  }

  dynamic "statement" {
    for_each = var.encryption == "SSE-KMS" ? [local.kms_key_arn] : []
    content {
      sid       = "UseBucketKey"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "this" {
  for_each = local.policies

  name        = "${var.iam_name_prefix}-${each.value.namespace}-${each.value.actor}"
  path        = var.iam_path
  description = "walbridge ${each.value.actor} of namespace ${each.value.namespace} in ${local.repo_url}"
  policy      = local.policy_documents[each.value.namespace][each.value.actor]
  tags        = var.tags

  lifecycle {
    precondition {
      condition     = length("${var.iam_name_prefix}-${each.value.namespace}-${each.value.actor}") <= 128
      error_message = "IAM policy name ${var.iam_name_prefix}-${each.value.namespace}-${each.value.actor} is longer than 128 characters: shorten iam_name_prefix."
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = local.roles

  name                 = "${var.iam_name_prefix}-${each.value.namespace}-${each.value.actor}"
  path                 = var.iam_path
  description          = "walbridge ${each.value.actor} of namespace ${each.value.namespace} in ${local.repo_url}"
  assume_role_policy   = each.value.trust_policy
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags

  lifecycle {
    precondition {
      condition     = length("${var.iam_name_prefix}-${each.value.namespace}-${each.value.actor}") <= 64
      error_message = "IAM role name ${var.iam_name_prefix}-${each.value.namespace}-${each.value.actor} is longer than 64 characters: shorten iam_name_prefix or the namespace."
    }
  }
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = local.roles

  role       = aws_iam_role.this[each.key].name
  policy_arn = aws_iam_policy.this[each.key].arn
}
