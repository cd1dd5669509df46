terraform {
  # 1.5: strcontains() in validations; optional() object attributes with defaults need 1.3.
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 5.22: google_storage_bucket.soft_delete_policy.
      version = ">= 5.22, < 8.0"
    }
  }
}
