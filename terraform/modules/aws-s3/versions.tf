terraform {
  # 1.5: strcontains() in validations; optional() object attributes with defaults need 1.3.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # The split S3 bucket resources (aws_s3_bucket_lifecycle_configuration, ...) as they are in 5.x and 6.x.
      version = ">= 5.0, < 7.0"
    }
  }
}
