terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
  }

  # Keep the state somewhere shared and safe (it names your archive), for example:
  # backend "s3" {
  #   bucket = "example-terraform-state"
  #   key    = "walbridge/terraform.tfstate"
  #   region = "eu-west-1"
  # }
}
