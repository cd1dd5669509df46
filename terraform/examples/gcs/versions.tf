terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.22, < 8.0"
    }
  }

  # Keep the state somewhere shared and safe (it names your archive), for example:
  # backend "gcs" {
  #   bucket = "example-terraform-state"
  #   prefix = "walbridge"
  # }
}
