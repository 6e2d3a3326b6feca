variable "region" {
  description = "AWS region to deploy to."
  type        = string
}

variable "name" {
  description = "Name of the service and prefix of every resource."
  type        = string
  default     = "event-dispatcher"
}

variable "image" {
  description = "Container image built from the repository's Dockerfile, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/event-dispatcher:v1.2.3."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the load balancer and the task."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing load balancer (at least two availability zones)."
  type        = list(string)
}

variable "task_subnet_ids" {
  description = "Subnets of the task. Private subnets need a NAT gateway or VPC endpoints to pull the image and send logs."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give the task a public IP (only for tasks in public subnets without NAT)."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS on 443. Empty: plain HTTP on 80 (for trials only)."
  type        = string
  default     = ""
}

variable "public_paths" {
  description = "When not empty, the public listener forwards only these paths (e.g. [\"/api/events\", \"/metrics\"], the ingest paths) and answers 404 for the rest; streams and /health are then reached through the internal listener. At most 5 paths."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.public_paths) <= 5
    error_message = "An ALB listener rule matches at most 5 path patterns."
  }
}

variable "internal_cidrs" {
  description = "CIDRs allowed on the internal listener (every path, for stream consumers and dashboards). The ALB is internet-facing: these are public source addresses (clients in the VPC arrive from their NAT gateway's Elastic IP; 10.0.0.0/8 never matches). Empty: no internal listener."
  type        = list(string)
  default     = []
}

variable "internal_port" {
  description = "Port of the internal listener."
  type        = number
  default     = 8443
}

variable "environment" {
  description = "Extra service variables (see `event_dispatcher -h`), e.g. CORS_ALLOWED_ORIGINS or CLIENT_IP_FIELD. They override the defaults of main.tf."
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
  description = "Secret service variables, by name, each the ARN of a Secrets Manager secret (its whole value) or of an SSM SecureString parameter, e.g. { LISTEN_TOKENS = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:event-dispatcher/listen-tokens-AbCdEf\" }. ECS reads them when the task starts; the task execution role is allowed to. Empty: streams are open to anyone who reaches them."
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
  description = "Task CPU units (256 = 0.25 vCPU)."
  type        = number
  default     = 512
}

variable "memory" {
  description = "Task memory in MiB. Worst case per listener is SUBSCRIBER_BUFFER_BYTES of queued events."
  type        = number
  default     = 1024
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention."
  type        = number
  default     = 30
}

variable "replicas" {
  description = "Number of tasks. More than one needs a broker: broker_url, or else an ElastiCache Valkey replication group is created."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 1 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number, at least 1."
  }
}

variable "broker_url" {
  description = "An existing broker for replicas > 1 (BROKER_URL) without credentials: rediss://host:6379 for ElastiCache with in-transit encryption, redis://, or nats://host:4222. It is readable in the task definition: a URL with a password or token goes in secrets.BROKER_URL instead. Neither with replicas > 1: a Valkey replication group is created."
  type        = string
  default     = ""

  validation {
    condition     = can(regex(local.no_credentials, var.broker_url))
    error_message = "broker_url carries credentials, which anyone allowed to describe the task definition could read: put that URL in Secrets Manager or SSM and pass its ARN as secrets.BROKER_URL."
  }

  validation {
    condition     = var.broker_url == "" || !contains(keys(var.secrets), "BROKER_URL")
    error_message = "BROKER_URL is set in both broker_url and secrets: keep one."
  }
}

variable "broker_cidrs" {
  description = "Networks of the existing broker_url, to which the task may connect on broker_port."
  type        = list(string)
  default     = []
}

variable "broker_port" {
  description = "Port of the existing broker_url (6379 Redis/Valkey, 4222 NATS)."
  type        = number
  default     = 6379
}

variable "valkey_node_type" {
  description = "Node type of the Valkey replication group created for replicas > 1. Every task receives every event: size for publishes/s x replicas."
  type        = string
  default     = "cache.t4g.small"
}

# --- Kinesis (kinesis.tf) --------------------------------------------------------

variable "kinesis_stream_name" {
  description = "A Kinesis data stream every task also puts each accepted event to (KINESIS_STREAM_NAME); the task role gets kinesis:PutRecords on it only. Empty: off. Set KINESIS_PARTITION_KEY_FIELD (e.g. session_id) in environment to keep a session on one shard."
  type        = string
  default     = ""

  validation {
    condition     = var.kinesis_stream_name == "" || can(regex("^[a-zA-Z0-9_.-]{1,128}$", var.kinesis_stream_name))
    error_message = "kinesis_stream_name must be 1-128 of A-Z a-z 0-9 _ . -"
  }

  validation {
    condition     = var.kinesis_stream_name == "" || !contains(keys(var.environment), "KINESIS_STREAM_NAME")
    error_message = "KINESIS_STREAM_NAME is set in both kinesis_stream_name and environment: keep kinesis_stream_name, which also grants the task role."
  }
}

variable "create_kinesis_stream" {
  description = "Create kinesis_stream_name as an on-demand stream (billed per GB, scales by itself), encrypted with the AWS-managed key. false: the stream exists already."
  type        = bool
  default     = false
}

variable "kinesis_retention_hours" {
  description = "Retention of the created stream, in hours (24 to 8760): how long a consumer (Firehose) that stopped can catch up."
  type        = number
  default     = 24

  validation {
    condition     = var.kinesis_retention_hours >= 24 && var.kinesis_retention_hours <= 8760
    error_message = "kinesis_retention_hours must be between 24 and 8760."
  }
}

variable "archive_bucket_arn" {
  description = "An S3 bucket (arn:aws:s3:::name) to which a Firehose delivery stream writes every event of kinesis_stream_name, JSON Lines, GZIP, under archive_prefix and the date. Empty: no archive."
  type        = string
  default     = ""

  validation {
    condition     = var.archive_bucket_arn == "" || (var.kinesis_stream_name != "" && can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9.-]{3,63}$", var.archive_bucket_arn)))
    error_message = "archive_bucket_arn must be a bucket ARN (arn:aws:s3:::name), and needs kinesis_stream_name."
  }
}

variable "archive_prefix" {
  description = "Key prefix of the archived objects; the date (year=/month=/day=/hour=) follows."
  type        = string
  default     = "events/"
}

variable "archive_buffer_seconds" {
  description = "Firehose writes an object at least this often (60 to 900 s)."
  type        = number
  default     = 300
}

variable "archive_buffer_mb" {
  description = "Firehose writes an object when this much is buffered (1 to 128 MiB), before compression."
  type        = number
  default     = 64
}
