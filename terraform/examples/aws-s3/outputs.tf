output "walbridge_repo" {
  description = "WALBRIDGE_REPO for every host."
  value       = module.walbridge.walbridge_repo
}

output "environment" {
  description = "Per namespace, the walbridge environment (WALBRIDGE_REPO, WALBRIDGE_NAMESPACE, WALBRIDGE_S3_REGION)."
  value       = module.walbridge.environment
}

output "host_instance_profiles" {
  description = "Per host, the instance profile to give the EC2 instance."
  value       = { for host, profile in aws_iam_instance_profile.host : host => profile.name }
}

output "operator_role_arns" {
  description = "Per namespace, the role operators assume to run walbridge trigger (null without operator_principal_arns)."
  value       = { for ns, roles in module.walbridge.role_arns : ns => roles.operator }
}

output "policy_arns" {
  description = "Per namespace, the policies of the primary, the standby and the operator."
  value       = module.walbridge.policy_arns
}
