variable "region" {
  description = "AWS region to deploy to (one where App Runner is offered)."
  type        = string
}

variable "name" {
  description = "Name of the service and prefix of every resource."
  type        = string
  default     = "event-dispatcher"
}

variable "image" {
  description = "Image in a private ECR repository of this account, built from the repository's Dockerfile, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/event-dispatcher:v1.2.3."
  type        = string
}

variable "environment" {
  description = "Extra service variables (see `event_dispatcher -h`), e.g. CORS_ALLOWED_ORIGINS. They override the defaults of main.tf; keep MAX_STREAM_DURATION under 104s (120 s limit, +15 % jitter)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.environment) : contains(local.known_environment, k)])
    error_message = "Unknown variable in environment: the service reads only the names listed in local.known_environment (main.tf)."
  }

  validation {
    condition     = alltrue([for k, v in var.environment : !contains(local.secret_environment, k) || (k == "BROKER_URL" && can(regex(local.no_credentials, v)))])
    error_message = "LISTEN_TOKENS, LISTEN_JWT_SECRET, PUBLISH_TOKENS, UPSTREAM_HEADERS and a BROKER_URL with credentials are secrets: pass them in secrets, not environment."
  }
}

variable "secrets" {
  description = "Secret service variables, by name, each the ARN of a Secrets Manager secret (its whole value) or of an SSM SecureString parameter, e.g. { LISTEN_TOKENS = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:event-dispatcher/listen-tokens-AbCdEf\" }. App Runner reads them with an instance role this module creates. Empty: streams are open to anyone who reaches them."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.secrets) : contains(local.secret_environment, k)])
    error_message = "Only LISTEN_TOKENS, LISTEN_JWT_SECRET, PUBLISH_TOKENS and BROKER_URL are secrets (local.secret_environment in main.tf)."
  }

  validation {
    condition     = !contains(keys(var.secrets), "BROKER_URL") || !contains(keys(var.environment), "BROKER_URL")
    error_message = "BROKER_URL is set in both secrets and environment: keep one."
  }
}

variable "cpu" {
  description = "vCPU of the instance, as App Runner spells it (e.g. \"1 vCPU\")."
  type        = string
  default     = "1 vCPU"
}

variable "memory" {
  description = "Memory of the instance, as App Runner spells it (e.g. \"2 GB\")."
  type        = string
  default     = "2 GB"
}

variable "auto_deployments_enabled" {
  description = "Redeploy whenever the image tag is pushed again."
  type        = bool
  default     = false
}

variable "max_instances" {
  description = "Most instances App Runner may run. More than one needs BROKER_URL in environment, or in secrets when it carries credentials (each instance has its own hub)."
  type        = number
  default     = 1

  validation {
    condition     = var.max_instances == 1 || (var.max_instances > 1 && (contains(keys(var.environment), "BROKER_URL") || contains(keys(var.secrets), "BROKER_URL")))
    error_message = "More than one instance needs a broker: set BROKER_URL in environment (or secrets)."
  }
}

variable "vpc_connector_subnet_ids" {
  description = "Private subnets of a VPC connector, for reaching a broker in the VPC (e.g. ElastiCache). Empty: no connector, outbound traffic goes to the internet."
  type        = list(string)
  default     = []
}

variable "vpc_connector_security_group_ids" {
  description = "Security groups of the VPC connector; the broker's security group must admit them on its port."
  type        = list(string)
  default     = []
}

variable "kinesis_stream_name" {
  description = "An existing Kinesis data stream every instance also puts each accepted event to (KINESIS_STREAM_NAME); the instance role gets kinesis:PutRecords on it only. Empty: off. To create the stream and a Firehose archive to S3, see deploy/aws-ecs (kinesis.tf)."
  type        = string
  default     = ""

  validation {
    condition     = var.kinesis_stream_name == "" || can(regex("^[a-zA-Z0-9_.-]{1,128}$", var.kinesis_stream_name))
    error_message = "kinesis_stream_name must be 1-128 of A-Z a-z 0-9 _ . -"
  }

  validation {
    condition     = var.kinesis_stream_name == "" || !contains(keys(var.environment), "KINESIS_STREAM_NAME")
    error_message = "KINESIS_STREAM_NAME is set in both kinesis_stream_name and environment: keep kinesis_stream_name, which also grants the instance role."
  }
}
