# Event dispatcher as an image-based App Runner service.
#
# App Runner is closed to new customers (AWS recommends ECS Express Mode, or
# see ../aws-ecs). What this deployment cannot change:
# - App Runner ends every HTTP request after 120 s, streams included. The
#   service therefore ends each stream itself after MAX_STREAM_DURATION
#   (±15 % jitter, at most 115 s with 100s) with a retry hint, and listeners
#   reconnect about every 100 s.
# - One instance unless a broker joins them: every instance has its own
#   in-memory hub, so max_instances > 1 needs BROKER_URL in var.environment
#   (ElastiCache Valkey through a VPC connector, see README.md).
#
# deploy/drift_test.go checks this file against the code: variable names,
# port, health path and MAX_STREAM_DURATION.

locals {
  container_port = 3569
  health_path    = "/health"

  # Every name the service reads (event_dispatcher -h); var.environment is
  # checked against it.
  known_environment = [
    "PORT", "LOG_LEVEL", "LOG_FORMAT", "MAX_BODY_BYTES", "BODY_READ_TIMEOUT",
    "CORS_ALLOWED_ORIGINS", "HEARTBEAT_INTERVAL", "WRITE_TIMEOUT",
    "SUBSCRIBER_BUFFER_BYTES", "MAX_SUBSCRIBERS", "PUBLISH_QUEUE_SIZE", "PUBLISH_QUEUE_BYTES", "MAX_FANOUT_LAG",
    "MAX_STREAM_DURATION", "SHUTDOWN_TIMEOUT", "CLIENT_IP_FIELD",
    "TRUSTED_PROXY_CIDRS", "LISTEN_TOKENS", "LISTEN_JWT_SECRET",
    "PUBLISH_RATE_PER_IP", "MAX_LISTENERS_PER_IP", "CLIENT_IP_ANONYMIZE",
    "STRICT_JSON", "ADMIN_PORT", "DRAIN_DELAY",
    "BROKER_URL", "BROKER_CHANNEL",
    "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_IP", "ADMIN_HOST",
    "TLS_CERT_FILE", "TLS_KEY_FILE",
    "PUBLISH_TOKENS",
    "UPSTREAM_URLS", "UPSTREAM_EVENT_TYPES", "UPSTREAM_HEADERS", "UPSTREAM_USER_AGENT",
    "UPSTREAM_IDLE_TIMEOUT",
    "KINESIS_STREAM_NAME", "KINESIS_PARTITION_KEY_FIELD", "KINESIS_BUFFER_BYTES", "KINESIS_FLUSH_INTERVAL",
    "GRPC_PORT",
  ]

  # The service's secrets: only ever from var.secrets (the platform's secret
  # store), never as literals in var.environment. BROKER_URL is one when it
  # carries credentials (user:password@, a NATS token@); without, it may
  # also be plain (no_credentials).
  secret_environment = ["LISTEN_TOKENS", "LISTEN_JWT_SECRET", "PUBLISH_TOKENS", "BROKER_URL", "UPSTREAM_HEADERS"]
  no_credentials     = "^[^@]*$"

  # App Runner sets PORT itself, to image_configuration.port.
  environment = merge(
    {
      MAX_STREAM_DURATION = "100s"
      LOG_FORMAT          = "json"
    },
    # Every accepted event also to an existing Kinesis stream.
    var.kinesis_stream_name == "" ? {} : {
      KINESIS_STREAM_NAME = var.kinesis_stream_name
    },
    var.environment,
  )

  # The instance role: reading var.secrets, putting to the Kinesis stream.
  instance_role = length(var.secrets) > 0 || var.kinesis_stream_name != ""
}

data "aws_iam_policy_document" "apprunner_build_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["build.apprunner.amazonaws.com"]
    }
  }
}

# Lets App Runner pull the image from this account's private ECR.
resource "aws_iam_role" "ecr_access" {
  name               = "${var.name}-ecr-access"
  assume_role_policy = data.aws_iam_policy_document.apprunner_build_assume.json
}

resource "aws_iam_role_policy_attachment" "ecr_access" {
  role       = aws_iam_role.ecr_access.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSAppRunnerServicePolicyForECRAccess"
}

# Lets the running service read the secrets of var.secrets.
data "aws_iam_policy_document" "apprunner_instance_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["tasks.apprunner.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  count = local.instance_role ? 1 : 0

  name               = "${var.name}-instance"
  assume_role_policy = data.aws_iam_policy_document.apprunner_instance_assume.json
}

data "aws_iam_policy_document" "secrets" {
  count = length(var.secrets) == 0 ? 0 : 1

  statement {
    actions   = ["secretsmanager:GetSecretValue", "ssm:GetParameters"]
    resources = values(var.secrets)
  }
}

resource "aws_iam_role_policy" "secrets" {
  count = length(var.secrets) == 0 ? 0 : 1

  name   = "${var.name}-secrets"
  role   = aws_iam_role.instance[0].id
  policy = data.aws_iam_policy_document.secrets[0].json
}

resource "aws_apprunner_auto_scaling_configuration_version" "single" {
  auto_scaling_configuration_name = "${var.name}-single"

  # One instance, or more with a broker: see the top of this file.
  min_size = 1
  max_size = var.max_instances

  # Requests one instance takes at once (App Runner's maximum); every open
  # stream counts as one.
  max_concurrency = 200
}

resource "aws_apprunner_service" "this" {
  service_name                   = var.name
  auto_scaling_configuration_arn = aws_apprunner_auto_scaling_configuration_version.single.arn

  source_configuration {
    auto_deployments_enabled = var.auto_deployments_enabled

    authentication_configuration {
      access_role_arn = aws_iam_role.ecr_access.arn
    }

    image_repository {
      image_identifier      = var.image
      image_repository_type = "ECR"

      image_configuration {
        port                          = tostring(local.container_port)
        runtime_environment_variables = local.environment
        # Read by App Runner from Secrets Manager or SSM Parameter Store with
        # the instance role below; never stored in the service's settings.
        runtime_environment_secrets = var.secrets
      }
    }
  }

  health_check_configuration {
    protocol            = "HTTP"
    path                = local.health_path
    interval            = 10
    timeout             = 5
    healthy_threshold   = 1
    unhealthy_threshold = 3
  }

  instance_configuration {
    cpu               = var.cpu
    memory            = var.memory
    instance_role_arn = local.instance_role ? aws_iam_role.instance[0].arn : null
  }

  # Outbound traffic through the VPC, to reach a broker (ElastiCache) there.
  dynamic "network_configuration" {
    for_each = length(var.vpc_connector_subnet_ids) == 0 ? [] : [1]
    content {
      egress_configuration {
        egress_type       = "VPC"
        vpc_connector_arn = aws_apprunner_vpc_connector.this[0].arn
      }
    }
  }

  depends_on = [aws_iam_role_policy_attachment.ecr_access]
}

resource "aws_apprunner_vpc_connector" "this" {
  count = length(var.vpc_connector_subnet_ids) == 0 ? 0 : 1

  vpc_connector_name = "${var.name}-vpc"
  subnets            = var.vpc_connector_subnet_ids
  security_groups    = var.vpc_connector_security_group_ids
}

# Lets the service put every event to var.kinesis_stream_name, and nothing
# else: the SDK makes no other call.
data "aws_kinesis_stream" "events" {
  count = var.kinesis_stream_name == "" ? 0 : 1

  name = var.kinesis_stream_name
}

data "aws_iam_policy_document" "put_records" {
  count = var.kinesis_stream_name == "" ? 0 : 1

  statement {
    actions   = ["kinesis:PutRecords"]
    resources = [data.aws_kinesis_stream.events[0].arn]
  }
}

resource "aws_iam_role_policy" "put_records" {
  count = var.kinesis_stream_name == "" ? 0 : 1

  name   = "${var.name}-kinesis-put"
  role   = aws_iam_role.instance[0].id
  policy = data.aws_iam_policy_document.put_records[0].json
}
