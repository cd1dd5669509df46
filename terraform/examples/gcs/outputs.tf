output "walbridge_repo" {
  description = "WALBRIDGE_REPO for every host."
  value       = module.walbridge.walbridge_repo
}

output "environment" {
  description = "Per namespace, the walbridge environment (WALBRIDGE_REPO, WALBRIDGE_NAMESPACE)."
  value       = module.walbridge.environment
}

output "host_service_accounts" {
  description = "Per host, the service account e-mail the VM must run as."
  value       = { for host, sa in google_service_account.host : host => sa.email }
}

output "members" {
  description = "Per namespace, the principals granted as primary, standby and operator."
  value       = module.walbridge.members
}
