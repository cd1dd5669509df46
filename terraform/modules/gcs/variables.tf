variable "project" {
  description = "Project that holds the bucket, the custom roles and the service accounts."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project))
    error_message = "project must be a project ID (6-30 characters of a-z 0-9 -, starting with a letter)."
  }
}

variable "bucket_name" {
  description = "Name of the bucket to create (globally unique). The repository URL becomes gs://<bucket_name>/<prefix>."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.bucket_name)) && !startswith(var.bucket_name, "goog") && !strcontains(var.bucket_name, "..")
    error_message = "bucket_name must be 3-63 characters of a-z 0-9 . _ - starting and ending with a letter or digit, not starting with \"goog\"."
  }
}

variable "location" {
  description = "Bucket location: a region (\"europe-west1\"), a dual-region (\"EUR4\") or a multi-region (\"EU\"). A standby in another region reads across regions."
  type        = string
  nullable    = false
}

variable "storage_class" {
  description = "Default storage class. WAL is written once and, unless a standby or a restore needs it, rarely read: STANDARD suits short retention; NEARLINE/COLDLINE have minimum storage durations that short WAL retention would pay anyway."
  type        = string
  default     = "STANDARD"
  nullable    = false

  validation {
    condition     = contains(["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"], var.storage_class)
    error_message = "storage_class must be STANDARD, NEARLINE, COLDLINE or ARCHIVE."
  }
}

variable "prefix" {
  description = "Repository prefix inside the bucket: what follows gs://<bucket>/ in WALBRIDGE_REPO, without leading or trailing slash (\"postgres\", \"prod/pg\"). Empty: namespaces sit at the top of the bucket."
  type        = string
  default     = ""
  nullable    = false

  validation {
    # A subset of what walbridge accepts (no empty, "." or ".." parts), limited to characters that
    # need no quoting in IAM condition expressions.
    condition     = var.prefix == "" || (can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.prefix)) && alltrue([for part in split("/", var.prefix) : part != "." && part != ".."]))
    error_message = "prefix must be empty or \"/\"-separated parts of A-Z a-z 0-9 . _ - (no leading, trailing or double slash, no \".\" or \"..\" parts)."
  }
}

variable "namespaces" {
  description = <<-EOT
    The walbridge namespaces (WALBRIDGE_NAMESPACE) stored in this bucket, by name. Per namespace:
      wal_retention_days     - delete objects under <prefix>/<namespace>/wal/ this many days after they were
                               archived; null or 0 = never (long-term archive, or %r cleanup by the standby).
                               Timeline history, identity.json and triggers are never expired.
      stream_retention_days  - delete chunks under <prefix>/<namespace>/stream/ this many days after they
                               were written (default 7, null too; 0 = never). walbridge stream removes them
                               itself once their segment is archived; this is for those a dead streamer left.
      primary_stream         - walbridge stream runs beside the primary with its identity: let the primary
                               create, read and delete chunks under <prefix>/<namespace>/stream/ (default
                               false: without it the primary deletes nothing but walbridge check's probes).
      standby_cleanup        - let the standby delete WAL (archive-fetch's %r cleanup); never history.
      standby_trigger_clear  - let the standby delete trigger objects ("walbridge trigger clear" in
                               recovery_end_command after it is promoted).
      members                - per actor (primary, standby, operator), IAM principals to grant
                               ("serviceAccount:pg1@proj.iam.gserviceaccount.com", "group:dba@example.com").
      service_account_prefix - when set, the module also creates a service account per actor,
                               <prefix>-primary, <prefix>-standby, <prefix>-operator, and grants it.
  EOT
  type = map(object({
    wal_retention_days    = optional(number)
    stream_retention_days = optional(number, 7)
    primary_stream        = optional(bool, false)
    standby_cleanup       = optional(bool, false)
    standby_trigger_clear = optional(bool, true)
    members = optional(object({
      primary  = optional(list(string), [])
      standby  = optional(list(string), [])
      operator = optional(list(string), [])
    }), {})
    service_account_prefix = optional(string)
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
    condition     = alltrue(flatten([for ns, cfg in var.namespaces : [for actor, members in cfg.members : [for m in members : can(regex("^(serviceAccount|user|group|domain|principal|principalSet):.+$", m))]]]))
    error_message = "members must be IAM principals such as serviceAccount:NAME@PROJECT.iam.gserviceaccount.com, group:EMAIL or principalSet://...; never allUsers or allAuthenticatedUsers."
  }

  validation {
    # Service account IDs are 6-30 characters; the longest suffix is "-operator".
    condition     = alltrue([for ns, cfg in var.namespaces : cfg.service_account_prefix == null || can(regex("^[a-z]([-a-z0-9]{0,19}[a-z0-9])?$", cfg.service_account_prefix))])
    error_message = "service_account_prefix must be 1-21 characters of a-z 0-9 -, starting with a letter and ending with a letter or digit."
  }
}

variable "versioning" {
  description = "Enable object versioning. Deleted and expired objects then stay as noncurrent versions for noncurrent_version_retention_days."
  type        = bool
  default     = false
  nullable    = false
}

variable "noncurrent_version_retention_days" {
  description = "With versioning: delete noncurrent object versions this many days after they became noncurrent."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && floor(var.noncurrent_version_retention_days) == var.noncurrent_version_retention_days
    error_message = "noncurrent_version_retention_days must be a whole number >= 1."
  }
}

variable "soft_delete_retention_days" {
  description = "Soft delete: keep deleted objects restorable (and billed) this many days: 0 (off) or 7-90. null: leave the bucket's default (7 days). Expired and cleaned-up WAL is billed for this long too."
  type        = number
  default     = null

  validation {
    condition     = var.soft_delete_retention_days == null || contains(concat([0], range(7, 91)), coalesce(var.soft_delete_retention_days, 0))
    error_message = "soft_delete_retention_days must be null, 0 or a whole number from 7 to 90."
  }
}

variable "kms_key_name" {
  description = "Customer-managed encryption key (CMEK) for new objects: projects/P/locations/L/keyRings/R/cryptoKeys/K, in the bucket's location. null: Google-managed encryption."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a crypto key name: projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

variable "grant_kms_to_storage_agent" {
  description = "With kms_key_name: grant the project's Cloud Storage service agent roles/cloudkms.cryptoKeyEncrypterDecrypter on the key (needs permission to set the key's IAM policy). false: you grant it yourself."
  type        = bool
  default     = true
  nullable    = false
}

variable "create_custom_roles" {
  description = "Create the four project-level custom roles the bindings use (<custom_role_id_prefix>.objectList, .objectRead, .objectCreate, .objectDelete). Roles belong to the project: with several buckets in one project, create them in one instance of the module and set this to false in the others."
  type        = bool
  default     = true
  nullable    = false
}

variable "custom_role_id_prefix" {
  description = "Start of the custom role IDs."
  type        = string
  default     = "walbridge"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9_]{3,48}$", var.custom_role_id_prefix))
    error_message = "custom_role_id_prefix must be 3-48 characters of A-Z a-z 0-9 _."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete the bucket with all its objects. Keep false for a WAL archive."
  type        = bool
  default     = false
  nullable    = false
}

variable "labels" {
  description = "Labels for the bucket."
  type        = map(string)
  default     = {}
  nullable    = false
}
