variable "region" {
  description = "AWS region of the bucket (put it where the primary runs)."
  type        = string
}

variable "bucket_name" {
  description = "Name of the S3 bucket to create (globally unique)."
  type        = string
}

variable "prefix" {
  description = "Repository prefix inside the bucket (\"\" for none): WALBRIDGE_REPO becomes s3://<bucket_name>/<prefix>."
  type        = string
  default     = "pg"
}

variable "encryption" {
  description = "\"SSE-S3\", or \"SSE-KMS\" with a key the module creates."
  type        = string
  default     = "SSE-S3"
}

variable "versioning" {
  description = "Keep deleted and expired objects as noncurrent versions for a while."
  type        = bool
  default     = false
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
  description = "Database hosts (EC2 instances), by name: the namespaces each archives to as primary and restores from as standby. Each host gets one role and instance profile holding the matching policies."
  type = map(object({
    primary_of = optional(list(string), [])
    standby_of = optional(list(string), [])
  }))
  default = {}

  validation {
    condition     = alltrue([for host in keys(var.hosts) : can(regex("^[A-Za-z0-9+=,.@_-]{1,40}$", host))])
    error_message = "Host names must be 1-40 characters of A-Z a-z 0-9 + = , . @ _ - (they become IAM role names)."
  }
}

variable "operator_principal_arns" {
  description = "IAM principals (users or roles, for example your DBA SSO role) allowed to assume the operator role of every namespace to write failover triggers. Empty: no operator roles."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for everything created."
  type        = map(string)
  default     = {}
}
