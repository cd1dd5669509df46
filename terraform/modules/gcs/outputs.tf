output "bucket_name" {
  description = "Name of the bucket."
  value       = google_storage_bucket.this.name
}

output "bucket_url" {
  description = "gs:// URL of the bucket."
  value       = google_storage_bucket.this.url
}

output "walbridge_repo" {
  description = "The repository URL: the value of WALBRIDGE_REPO (--repo) for every namespace of this bucket."
  value       = local.repo_url
}

output "environment" {
  description = "Per namespace, the walbridge settings this bucket implies (WALBRIDGE_REPO, WALBRIDGE_NAMESPACE)."
  value = {
    for ns in keys(var.namespaces) : ns => {
      WALBRIDGE_REPO      = local.repo_url
      WALBRIDGE_NAMESPACE = ns
    }
  }
}

output "service_account_emails" {
  description = "Per namespace, the e-mail addresses of the service accounts the module created for the primary, the standby and the operator (null where none was created)."
  value = {
    for ns in keys(var.namespaces) : ns => {
      for actor in local.actors : actor => try(google_service_account.this["${ns}/${actor}"].email, null)
    }
  }
}

output "members" {
  description = "Per namespace, the principals granted as primary, standby and operator (given members and created service accounts)."
  value = {
    for ns, actors in local.members : ns => {
      for actor, members in actors : actor => sort(values(members))
    }
  }
}

output "custom_role_names" {
  description = "The custom roles the bindings use (projects/P/roles/ID), by kind: list, read, create, delete."
  value       = local.role_names
}

output "key_prefixes" {
  description = "Per namespace, the object name prefixes walbridge writes."
  value       = local.layout
}
