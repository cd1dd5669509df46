output "bucket_name" {
  description = "Name of the bucket."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the bucket."
  value       = aws_s3_bucket.this.arn
}

output "bucket_region" {
  description = "Region of the bucket (WALBRIDGE_S3_REGION, or AWS_REGION)."
  value       = aws_s3_bucket.this.region
}

output "walbridge_repo" {
  description = "The repository URL: the value of WALBRIDGE_REPO (--repo) for every namespace of this bucket."
  value       = local.repo_url
}

output "environment" {
  description = "Per namespace, the walbridge settings this bucket implies (WALBRIDGE_REPO, WALBRIDGE_NAMESPACE, WALBRIDGE_S3_REGION)."
  value = {
    for ns in keys(var.namespaces) : ns => {
      WALBRIDGE_REPO      = local.repo_url
      WALBRIDGE_NAMESPACE = ns
      WALBRIDGE_S3_REGION = aws_s3_bucket.this.region
    }
  }
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the bucket (null with SSE-S3)."
  value       = local.kms_key_arn
}

output "policy_arns" {
  description = "Per namespace, the ARNs of the IAM policies of the primary, the standby and the operator. Attach them to your own roles, users or instance profiles when the module does not create roles."
  value = {
    for ns in keys(var.namespaces) : ns => {
      for actor in local.actors : actor => aws_iam_policy.this["${ns}/${actor}"].arn
    }
  }
}

output "role_arns" {
  description = "Per namespace, the ARNs of the roles the module created for the primary, the standby and the operator (null where no trust policy was given)."
  value = {
    for ns in keys(var.namespaces) : ns => {
      for actor in local.actors : actor => try(aws_iam_role.this["${ns}/${actor}"].arn, null)
    }
  }
}

output "role_names" {
  description = "Per namespace, the names of the roles the module created (null where no trust policy was given)."
  value = {
    for ns in keys(var.namespaces) : ns => {
      for actor in local.actors : actor => try(aws_iam_role.this["${ns}/${actor}"].name, null)
    }
  }
}

output "key_prefixes" {
  description = "Per namespace, the key prefixes walbridge writes (for inventories, replication rules or alarms of your own)."
  value       = local.layout
}
