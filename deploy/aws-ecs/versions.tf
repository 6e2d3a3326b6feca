terraform {
  required_version = ">= 1.9" # validations that refer to locals

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
  }
}

provider "aws" {
  region = var.region
}
