# Bucket IAM for the three actors of each namespace, with IAM conditions on the object name:
#
#   primary  (archive-push)   reads and creates WAL, history and identity.json, and deletes none of
#                             them. (Overwriting needs storage.objects.delete; walbridge never
#                             overwrites: it creates with ifGenerationMatch=0 and compares.)
#            (walbridge stream, run beside it with its credentials) creates, reads, lists and deletes
#                             chunks under stream/, and deletes nothing elsewhere: it removes a
#                             segment's chunks once archive-push has stored the segment whole.
#            (walbridge check) creates and deletes its probes under check/.
#   standby  (archive-fetch)  reads the namespace, streamed chunks included; deletes WAL only with
#                             standby_cleanup (%r cleanup), trigger objects only with standby_trigger_clear.
#   operator (walbridge trigger smart|fast|clear|status) creates, reads and deletes trigger objects.
#
# Cloud Storage checks storage.objects.list against the bucket, not against object names, so a
# condition on resource.name can never allow a listing. Listing therefore has a role of its own
# holding nothing but storage.objects.list, granted without condition to every actor: the standby
# (bucket check, %r cleanup, a failover's streamed chunks), the operator (trigger status) and the
# primary (walbridge stream finds its chunks under stream/ by listing; archive-push itself never
# lists: unlike S3, Cloud Storage answers 404 for a missing object to whoever may read it). It
# shows object names (never contents) in the whole bucket: put namespaces whose names must stay
# private from each other in different buckets. Every role that reaches object data is conditional.

locals {
  actors = ["primary", "standby", "operator"]

  # Single-permission custom roles, so that each binding grants exactly one kind of access.
  custom_roles = {
    list = {
      id          = "${var.custom_role_id_prefix}.objectList"
      title       = "walbridge: list objects"
      permissions = ["storage.objects.list"]
    }
    read = {
      id          = "${var.custom_role_id_prefix}.objectRead"
      title       = "walbridge: read objects"
      permissions = ["storage.objects.get"]
    }
    create = {
      id          = "${var.custom_role_id_prefix}.objectCreate"
      title       = "walbridge: create objects"
      permissions = ["storage.objects.create"]
    }
    delete = {
      id          = "${var.custom_role_id_prefix}.objectDelete"
      title       = "walbridge: delete objects"
      permissions = ["storage.objects.delete"]
    }
  }
  role_names = { for name, role in local.custom_roles : name => "projects/${var.project}/roles/${role.id}" }

  service_accounts = {
    for sa in flatten([
      for ns, cfg in var.namespaces : [
        for actor in local.actors : {
          key        = "${ns}/${actor}"
          namespace  = ns
          actor      = actor
          account_id = "${cfg.service_account_prefix}-${actor}"
        }
      ] if cfg.service_account_prefix != null
    ]) : sa.key => sa
  }

  # Per namespace and actor, the principals, keyed by something known at plan time.
  members = {
    for ns, cfg in var.namespaces : ns => {
      for actor in local.actors : actor => merge(
        { for m in toset(cfg.members[actor]) : m => m },
        { for key, sa in local.service_accounts : "service-account:${key}" => "serviceAccount:${google_service_account.this[key].email}" if sa.namespace == ns && sa.actor == actor },
      )
    }
  }

  # Condition expressions on object names ("projects/_/buckets/B/objects/NAME").
  object_root = "projects/_/buckets/${var.bucket_name}/objects/"
  conditions = {
    for ns, l in local.layout : ns => {
      primary = join(" || ", concat([
        format("resource.name.startsWith(%q)", "${local.object_root}${l.wal}"),
        format("resource.name.startsWith(%q)", "${local.object_root}${l.history}"),
        format("resource.name == %q", "${local.object_root}${l.identity}"),
      ], var.namespaces[ns].primary_stream ? [format("resource.name.startsWith(%q)", "${local.object_root}${l.stream}")] : []))
      namespace = format("resource.name.startsWith(%q)", "${local.object_root}${l.namespace}")
      wal       = format("resource.name.startsWith(%q)", "${local.object_root}${l.wal}")
      trigger   = format("resource.name.startsWith(%q)", "${local.object_root}${l.trigger}")
      stream    = format("resource.name.startsWith(%q)", "${local.object_root}${l.stream}")
      check     = format("resource.name.startsWith(%q)", "${local.object_root}${l.check}")
    }
  }

  # Per namespace and actor, the conditional grants: a name (unique per actor), the role, and the
  # condition's title (at most 100 characters, so without the namespace) and expression.
  grants = {
    for ns, cfg in var.namespaces : ns => {
      primary = concat(
        [
          { name = "read", role = "read", title = "walbridge primary: read WAL", expression = local.conditions[ns].primary },
          { name = "create", role = "create", title = "walbridge primary: archive WAL", expression = local.conditions[ns].primary },
          # walbridge check: an upload with a wrong MD5 (refused), removed again where a store took it.
          { name = "check-create", role = "create", title = "walbridge primary: walbridge check probes", expression = local.conditions[ns].check },
          { name = "check-delete", role = "delete", title = "walbridge primary: remove walbridge check probes", expression = local.conditions[ns].check },
        ],
        # walbridge stream (primary_stream) removes the chunks of archived segments: delete under stream/ only.
        cfg.primary_stream ? [{ name = "stream", role = "delete", title = "walbridge primary: remove streamed chunks", expression = local.conditions[ns].stream }] : [],
      )
      standby = concat(
        [{ name = "read", role = "read", title = "walbridge standby: read the namespace", expression = local.conditions[ns].namespace }],
        cfg.standby_cleanup ? [{ name = "cleanup", role = "delete", title = "walbridge standby: clean up WAL", expression = local.conditions[ns].wal }] : [],
        cfg.standby_trigger_clear ? [{ name = "clear", role = "delete", title = "walbridge standby: clear triggers", expression = local.conditions[ns].trigger }] : [],
      )
      operator = [
        { name = "read", role = "read", title = "walbridge operator: read triggers", expression = local.conditions[ns].trigger },
        { name = "create", role = "create", title = "walbridge operator: write triggers", expression = local.conditions[ns].trigger },
        { name = "delete", role = "delete", title = "walbridge operator: remove triggers", expression = local.conditions[ns].trigger },
      ]
    }
  }

  object_bindings = {
    for b in flatten([
      for ns, actors in local.grants : [
        for actor, grants in actors : [
          for g in grants : [
            for member_key, member in local.members[ns][actor] : {
              key        = "${ns}/${actor}/${g.name}/${member_key}"
              role       = local.role_names[g.role]
              member     = member
              title      = g.title
              expression = g.expression
              namespace  = ns
            }
          ]
        ]
      ]
    ]) : b.key => b
  }

  # Listing, for every actor (see above). Once per principal: a principal may be the standby of two
  # namespaces, and two resources managing one unconditional binding would undo each other on destroy.
  listers = merge([for ns, actors in local.members : merge(actors.primary, actors.standby, actors.operator)]...)
}

resource "google_project_iam_custom_role" "this" {
  for_each = var.create_custom_roles ? local.custom_roles : {}

  project     = var.project
  role_id     = each.value.id
  title       = each.value.title
  description = "walbridge WAL archiving: ${join(", ", each.value.permissions)} (granted with conditions on object names by the walbridge Terraform module)"
  permissions = each.value.permissions
}

resource "google_service_account" "this" {
  for_each = local.service_accounts

  project      = var.project
  account_id   = each.value.account_id
  display_name = substr("walbridge ${each.value.actor} of ${each.value.namespace}", 0, 100)
  description  = "walbridge ${each.value.actor} of namespace ${each.value.namespace} in gs://${var.bucket_name}"
}

resource "google_storage_bucket_iam_member" "list" {
  for_each = local.listers

  bucket = google_storage_bucket.this.name
  role   = local.role_names.list
  member = each.value

  depends_on = [google_project_iam_custom_role.this]
}

resource "google_storage_bucket_iam_member" "objects" {
  for_each = local.object_bindings

  bucket = google_storage_bucket.this.name
  role   = each.value.role
  member = each.value.member

  condition {
    title       = each.value.title
    description = substr("namespace ${each.value.namespace} of ${local.repo_url}", 0, 256)
    expression  = each.value.expression
  }

  depends_on = [google_project_iam_custom_role.this]
}
