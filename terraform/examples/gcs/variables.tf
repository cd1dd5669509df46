variable "project" {
  description = "Project for the bucket, the roles and the service accounts."
  type        = string
}

variable "location" {
  description = "Bucket location (put it where the primary runs): a region, a dual-region or a multi-region."
  type        = string
}

variable "bucket_name" {
  description = "Name of the bucket to create (globally unique)."
  type        = string
}

variable "prefix" {
  description = "Repository prefix inside the bucket (\"\" for none): WALBRIDGE_REPO becomes gs://<bucket_name>/<prefix>."
  type        = string
  default     = "pg"
}

variable "kms_key_name" {
  description = "Optional CMEK key (projects/P/locations/L/keyRings/R/cryptoKeys/K) in the bucket's location; null for Google-managed encryption."
  type        = string
  default     = null
}

variable "soft_delete_retention_days" {
  description = "Soft delete retention: 0 (off), 7-90, or null for the default (7 days)."
  type        = number
  default     = null
}

variable "namespaces" {
  description = "The walbridge namespaces in the bucket, with their WAL retention (null: never expired), whether the standby cleans up with %r, whether walbridge stream runs beside the primary, and how long chunks it left behind are kept (null: the module's 7 days; 0: for ever)."
  type = map(object({
    wal_retention_days    = optional(number)
    standby_cleanup       = optional(bool, false)
    stream_retention_days = optional(number)
    primary_stream        = optional(bool, false)
  }))
}

variable "hosts" {
  description = "Database hosts (Compute Engine VMs), by service account ID: the namespaces each archives to as primary and restores from as standby. Each host gets one service account, granted what the namespaces need."
  type = map(object({
    primary_of = optional(list(string), [])
    standby_of = optional(list(string), [])
  }))
  default = {}

  validation {
    condition     = alltrue([for host in keys(var.hosts) : can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", host))])
    error_message = "Host names are service account IDs: 6-30 characters of a-z 0-9 -, starting with a letter."
  }
}

variable "operators" {
  description = "Principals allowed to write failover triggers in every namespace (\"group:dba@example.com\")."
  type        = list(string)
  default     = []
}
