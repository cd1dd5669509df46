variable "bucket_name" {
  description = "Name of the S3 bucket to create (globally unique). The repository URL becomes s3://<bucket_name>/<prefix>."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !strcontains(var.bucket_name, "..")
    error_message = "bucket_name must be 3-63 characters of a-z 0-9 . - starting and ending with a letter or digit, without \"..\"."
  }
}

variable "prefix" {
  description = "Repository prefix inside the bucket: what follows s3://<bucket>/ in WALBRIDGE_REPO, without leading or trailing slash (\"postgres\", \"prod/pg\"). Empty: namespaces sit at the top of the bucket."
  type        = string
  default     = ""
  nullable    = false

  validation {
    # A subset of what walbridge accepts (no empty, "." or ".." parts), limited to characters that
    # are inert in IAM ARNs and conditions (no * ? $ and the like).
    condition     = var.prefix == "" || (can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.prefix)) && alltrue([for part in split("/", var.prefix) : part != "." && part != ".."]))
    error_message = "prefix must be empty or \"/\"-separated parts of A-Z a-z 0-9 . _ - (no leading, trailing or double slash, no \".\" or \"..\" parts)."
  }
}

variable "namespaces" {
  description = <<-EOT
    The walbridge namespaces (WALBRIDGE_NAMESPACE) stored in this bucket, by name. Per namespace:
      wal_retention_days    - delete objects under <prefix>/<namespace>/wal/ this many days after they were
                              archived; null or 0 = never (long-term archive, or %r cleanup by the standby).
                              Timeline history, identity.json and triggers are never expired.
      stream_retention_days - delete chunks under <prefix>/<namespace>/stream/ this many days after they
                              were written (default 7, null too; 0 = never). walbridge stream removes them
                              itself once their segment is archived; this is for those a dead streamer left.
      primary_stream        - walbridge stream runs beside the primary with its identity: let the primary
                              create, read and delete chunks under <prefix>/<namespace>/stream/ (default
                              false: without it the primary deletes nothing but walbridge check's probes).
      standby_cleanup       - let the standby delete WAL (archive-fetch's %r cleanup); never history.
      standby_trigger_clear - let the standby delete trigger objects ("walbridge trigger clear" in
                              recovery_end_command after it is promoted).
      trust_policies        - per actor (primary, standby, operator), an assume-role policy JSON; when set,
                              the module creates that actor's IAM role and attaches its policy. Without it,
                              attach the policy (output policy_arns) to a role or user of your own.
  EOT
  type = map(object({
    wal_retention_days    = optional(number)
    stream_retention_days = optional(number, 7)
    primary_stream        = optional(bool, false)
    standby_cleanup       = optional(bool, false)
    standby_trigger_clear = optional(bool, true)
    trust_policies = optional(object({
      primary  = optional(string)
      standby  = optional(string)
      operator = optional(string)
    }), {})
  }))
  nullable = false

  validation {
    condition     = length(var.namespaces) > 0
    error_message = "namespaces must name at least one namespace."
  }

  validation {
    # The rule of namespaceProblem() in src/archive/layout.ts.
    condition     = alltrue([for ns in keys(var.namespaces) : can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", ns)) && !strcontains(ns, "..")])
    error_message = "Each namespace must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit, without \"..\"."
  }

  validation {
    condition     = alltrue([for ns, cfg in var.namespaces : floor(coalesce(cfg.wal_retention_days, 0)) == coalesce(cfg.wal_retention_days, 0) && coalesce(cfg.wal_retention_days, 0) >= 0])
    error_message = "wal_retention_days must be null or a whole number of days >= 0 (0 or null: WAL is never expired)."
  }

  validation {
    condition     = alltrue([for ns, cfg in var.namespaces : floor(coalesce(cfg.stream_retention_days, 0)) == coalesce(cfg.stream_retention_days, 0) && coalesce(cfg.stream_retention_days, 0) >= 0])
    error_message = "stream_retention_days must be a whole number of days >= 0 (0: streamed chunks are never expired)."
  }

  validation {
    condition     = alltrue([for ns, cfg in var.namespaces : alltrue([for actor, policy in cfg.trust_policies : policy == null || can(jsondecode(policy))])])
    error_message = "trust_policies must be JSON documents (for example data.aws_iam_policy_document.x.json)."
  }
}

variable "versioning" {
  description = "Enable bucket versioning. Deleted and expired objects then stay as noncurrent versions for noncurrent_version_expiration_days. Once enabled, S3 versioning can only be suspended, not removed."
  type        = bool
  default     = false
  nullable    = false
}

variable "noncurrent_version_expiration_days" {
  description = "With versioning: delete noncurrent object versions this many days after they became noncurrent."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number >= 1."
  }
}

variable "encryption" {
  description = "Default encryption: \"SSE-S3\" (S3-managed keys) or \"SSE-KMS\" (a KMS key: kms_key_arn, or one the module creates)."
  type        = string
  default     = "SSE-S3"
  nullable    = false

  validation {
    condition     = contains(["SSE-S3", "SSE-KMS"], var.encryption)
    error_message = "encryption must be \"SSE-S3\" or \"SSE-KMS\"."
  }
}

variable "kms_key_arn" {
  description = "With encryption = \"SSE-KMS\": ARN of an existing KMS key (its key policy must let this account's IAM policies grant its use). null: the module creates a key with rotation enabled."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), not an alias."
  }
}

variable "kms_key_deletion_window_days" {
  description = "Waiting period before a KMS key the module created is deleted after destroy (7-30 days)."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.kms_key_deletion_window_days >= 7 && var.kms_key_deletion_window_days <= 30
    error_message = "kms_key_deletion_window_days must be between 7 and 30."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete the bucket with all its objects. Keep false for a WAL archive."
  type        = bool
  default     = false
  nullable    = false
}

variable "iam_name_prefix" {
  description = "Start of the names of the IAM policies and roles: <iam_name_prefix>-<namespace>-<primary|standby|operator>. Use a distinct value per bucket when several buckets share an account."
  type        = string
  default     = "walbridge"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,32}$", var.iam_name_prefix))
    error_message = "iam_name_prefix must be 1-32 characters of A-Z a-z 0-9 + = , . @ _ -."
  }
}

variable "iam_path" {
  description = "IAM path for the policies and roles."
  type        = string
  default     = "/"
  nullable    = false

  validation {
    condition     = can(regex("^/([A-Za-z0-9+=,.@_-]+/)*$", var.iam_path))
    error_message = "iam_path must start and end with \"/\" (\"/\" or \"/walbridge/\")."
  }
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary policy ARN for the roles the module creates (null: none)."
  type        = string
  default     = null

  validation {
    condition     = var.permissions_boundary_arn == null || can(regex("^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/", var.permissions_boundary_arn))
    error_message = "permissions_boundary_arn must be an IAM policy ARN."
  }
}

variable "bucket_policy_documents" {
  description = "More bucket policy JSON documents to merge into the bucket policy (which always denies requests without TLS)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for doc in var.bucket_policy_documents : can(jsondecode(doc))])
    error_message = "bucket_policy_documents must be JSON policy documents."
  }
}

variable "tags" {
  description = "Tags for every resource the module creates."
  type        = map(string)
  default     = {}
  nullable    = false
}
