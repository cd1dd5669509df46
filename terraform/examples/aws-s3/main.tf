# A WAL archive bucket for walbridge, with an IAM role and instance profile per database host and
# an operator role per namespace. Copy this directory with ../../modules (see the module block), fill
# in terraform.tfvars, terraform apply.

provider "aws" {
  region = var.region
}

# Operators (people or automation) assume the operator role to write failover triggers.
data "aws_iam_policy_document" "operator_trust" {
  count = length(var.operator_principal_arns) > 0 ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.operator_principal_arns
    }
  }
}

module "walbridge" {
  # The module beside this example in walbridge's terraform/ directory: copy both, or point this
  # at your copy of the module (or a git:: URL with //terraform/modules/aws-s3?ref=<release tag>).
  source = "../../modules/aws-s3"

  bucket_name = var.bucket_name
  prefix      = var.prefix
  encryption  = var.encryption
  versioning  = var.versioning
  tags        = var.tags

  namespaces = {
    for ns, cfg in var.namespaces : ns => {
      wal_retention_days    = cfg.wal_retention_days
      standby_cleanup       = cfg.standby_cleanup
      stream_retention_days = cfg.stream_retention_days
      primary_stream        = cfg.primary_stream
      standby_trigger_clear = true
      trust_policies = {
        operator = length(var.operator_principal_arns) > 0 ? data.aws_iam_policy_document.operator_trust[0].json : null
      }
    }
  }
}

# Database hosts: one role per host, because an instance profile holds one role and a host is often
# two things at once: a standby and, once promoted, a primary (archiving into the same namespace on
# a new timeline, or into another namespace).
data "aws_iam_policy_document" "ec2_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "host" {
  for_each = var.hosts

  name               = "walbridge-host-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.ec2_trust.json
  tags               = var.tags

  lifecycle {
    precondition {
      condition     = alltrue([for ns in concat(each.value.primary_of, each.value.standby_of) : contains(keys(var.namespaces), ns)])
      error_message = "Host ${each.key} names a namespace that is not in var.namespaces."
    }
  }
}

resource "aws_iam_instance_profile" "host" {
  for_each = var.hosts

  name = aws_iam_role.host[each.key].name
  role = aws_iam_role.host[each.key].name
  tags = var.tags
}

locals {
  host_policies = {
    for a in flatten([
      for host, h in var.hosts : concat(
        [for ns in h.primary_of : { key = "${host}/${ns}/primary", host = host, namespace = ns, actor = "primary" }],
        [for ns in h.standby_of : { key = "${host}/${ns}/standby", host = host, namespace = ns, actor = "standby" }],
      )
    ]) : a.key => a
  }
}

resource "aws_iam_role_policy_attachment" "host" {
  for_each = local.host_policies

  role       = aws_iam_role.host[each.value.host].name
  policy_arn = module.walbridge.policy_arns[each.value.namespace][each.value.actor]
}
