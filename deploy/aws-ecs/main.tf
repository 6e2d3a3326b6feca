# Event dispatcher on ECS Fargate behind an Application Load Balancer.
#
# var.replicas tasks (default 1). Every task has its own in-memory hub; with
# more than one, a broker joins them (BROKER_URL): an ElastiCache Valkey
# replication group created here, or an existing endpoint (var.broker_url).
# Without a broker, an event POSTed to one task would never reach listeners
# connected to another: the service refuses to plan replicas > 1 without one.
#
# deploy/drift_test.go checks this file against the code: variable names,
# port, health path and the timeouts below.

locals {
  container_name = "event-dispatcher"
  container_port = 3569
  health_path    = "/health"

  # The service's grace period after SIGTERM, and what ECS and the load
  # balancer allow around it: ECS kills the container stop_timeout seconds
  # after SIGTERM, so it must exceed DRAIN_DELAY + SHUTDOWN_TIMEOUT; the target drains for
  # deregistration_delay seconds before the task is stopped, long enough for
  # POSTs in flight. Listeners still on the draining task miss the events
  # POSTed meanwhile (they reach the new task), so the delay stays short.
  stop_timeout         = 30
  deregistration_delay = 20

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

  # More than one replica needs a broker. Without one given (var.broker_url,
  # or BROKER_URL in var.secrets or var.environment), one is created: Valkey
  # with in-transit encryption, hence rediss://, and no AUTH token (only the
  # tasks' security group reaches it), so its URL holds no secret and goes
  # in the plain environment. A URL with credentials comes from var.secrets.
  broker_secret = contains(keys(var.secrets), "BROKER_URL")
  broker_given  = var.broker_url != "" || local.broker_secret || contains(keys(var.environment), "BROKER_URL")
  create_valkey = var.replicas > 1 && !local.broker_given
  has_broker    = local.broker_given || local.create_valkey
  broker_url    = local.create_valkey ? "rediss://${aws_elasticache_replication_group.broker[0].primary_endpoint_address}:${local.valkey_port}" : var.broker_url
  valkey_port   = 6379

  environment = merge(
    {
      PORT             = "3569"
      SHUTDOWN_TIMEOUT = "15s"
      # /health answers 503 this long before the listener closes, so the
      # load balancer stops routing here before connections are refused.
      DRAIN_DELAY = "5s"
      LOG_FORMAT  = "json"
      # Heartbeat comments keep streams alive through the load balancer's
      # idle timeout (idle_timeout below) and the consumer's 12 s one.
      HEARTBEAT_INTERVAL = "5s"
      # The load balancer's nodes are in the VPC: believe their
      # X-Forwarded-For, so CLIENT_IP_FIELD (if set) gets the player's IP.
      TRUSTED_PROXY_CIDRS = data.aws_vpc.this.cidr_block
    },
    # Replicas share every event through the broker; one alone needs none.
    !local.has_broker || local.broker_secret ? {} : {
      BROKER_URL = local.broker_url
    },
    # Every accepted event also to Kinesis (kinesis.tf).
    !local.kinesis_on ? {} : {
      KINESIS_STREAM_NAME = var.kinesis_stream_name
    },
    var.environment,
  )

  public_listener_port = var.certificate_arn == "" ? 80 : 443
  listener_protocol    = var.certificate_arn == "" ? "HTTP" : "HTTPS"
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

# --- Load balancer -----------------------------------------------------------

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "Load balancer of ${var.name}"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_public" {
  security_group_id = aws_security_group.alb.id
  description       = "Public listener"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = local.public_listener_port
  to_port           = local.public_listener_port
}

resource "aws_vpc_security_group_ingress_rule" "alb_internal" {
  for_each = toset(var.internal_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "Internal listener"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.internal_port
  to_port           = var.internal_port
}

resource "aws_vpc_security_group_egress_rule" "alb_to_task" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the task"
  referenced_security_group_id = aws_security_group.task.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
}

resource "aws_lb" "this" {
  name               = var.name
  load_balancer_type = "application"
  internal           = false
  security_groups    = [aws_security_group.alb.id]
  subnets            = var.public_subnet_ids

  # Seconds a connection may stay without a byte in either direction. Above
  # HEARTBEAT_INTERVAL, so streams (which carry a heartbeat) are never cut;
  # below the service's own keep-alive timeout (120 s), so the load balancer
  # never reuses a connection the service is closing (a 502 on a POST).
  idle_timeout = 100

  drop_invalid_header_fields = true
}

resource "aws_lb_target_group" "this" {
  name        = var.name
  port        = local.container_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id

  deregistration_delay = local.deregistration_delay

  health_check {
    path                = local.health_path
    port                = "traffic-port"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 30
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "public" {
  load_balancer_arn = aws_lb.this.arn
  port              = local.public_listener_port
  protocol          = local.listener_protocol
  certificate_arn   = var.certificate_arn == "" ? null : var.certificate_arn
  ssl_policy        = var.certificate_arn == "" ? null : "ELBSecurityPolicy-TLS13-1-2-2021-06"

  # Everything goes to the service, unless public_paths restricts the
  # public side to those paths (rule below).
  dynamic "default_action" {
    for_each = length(var.public_paths) == 0 ? [1] : []
    content {
      type             = "forward"
      target_group_arn = aws_lb_target_group.this.arn
    }
  }

  dynamic "default_action" {
    for_each = length(var.public_paths) == 0 ? [] : [1]
    content {
      type = "fixed-response"
      fixed_response {
        content_type = "application/json"
        message_body = "{\"error\":\"no such path\"}"
        status_code  = "404"
      }
    }
  }
}

resource "aws_lb_listener_rule" "public_paths" {
  count = length(var.public_paths) == 0 ? 0 : 1

  listener_arn = aws_lb_listener.public.arn
  priority     = 10

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  condition {
    path_pattern {
      values = var.public_paths
    }
  }
}

resource "aws_lb_listener" "internal" {
  count = length(var.internal_cidrs) == 0 ? 0 : 1

  load_balancer_arn = aws_lb.this.arn
  port              = var.internal_port
  protocol          = local.listener_protocol
  certificate_arn   = var.certificate_arn == "" ? null : var.certificate_arn
  ssl_policy        = var.certificate_arn == "" ? null : "ELBSecurityPolicy-TLS13-1-2-2021-06"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
}

# --- Task ----------------------------------------------------------------------

resource "aws_security_group" "task" {
  name        = "${var.name}-task"
  description = "Task of ${var.name}"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "task_from_alb" {
  security_group_id            = aws_security_group.task.id
  description                  = "From the load balancer"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
}

resource "aws_vpc_security_group_egress_rule" "task_https" {
  security_group_id = aws_security_group.task.id
  description       = "Image pull and logs"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# Lets ECS read the secrets of var.secrets when it starts the task.
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
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets[0].json
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  # What the service itself may call: PutRecords on the Kinesis stream, if any.
  task_role_arn = local.kinesis_on ? aws_iam_role.task[0].arn : null

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([
    {
      name      = local.container_name
      image     = var.image
      essential = true

      portMappings = [{ containerPort = local.container_port, protocol = "tcp" }]
      environment  = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
      # Read by ECS from Secrets Manager or SSM Parameter Store when the task
      # starts; never in the task definition.
      secrets = [for k in sort(keys(var.secrets)) : { name = k, valueFrom = var.secrets[k] }]

      # The image has no shell: the binary probes its own /health.
      healthCheck = {
        command     = ["CMD", "/event_dispatcher", "-healthcheck"]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 10
      }

      stopTimeout            = local.stop_timeout
      readonlyRootFilesystem = true
      user                   = "65532:65532"

      # One descriptor per listener: room for MAX_SUBSCRIBERS (10000).
      ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "ecs"
        }
      }
    }
  ])
}

resource "aws_ecs_service" "this" {
  name            = var.name
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.this.arn
  launch_type     = "FARGATE"

  # More than one only with a broker: see the top of this file.
  desired_count = var.replicas

  # Deployments start the new task and wait for it to be healthy before the
  # old one drains, so reconnecting listeners find a task at once. For those
  # few seconds two hubs run: events POSTed to the new task do not reach
  # listeners still on the old one.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 10

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.task_subnet_ids
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = var.assign_public_ip
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = local.container_name
    container_port   = local.container_port
  }

  depends_on = [aws_lb_listener.public]

  lifecycle {
    precondition {
      condition     = var.replicas == 1 || local.has_broker
      error_message = "More than one replica needs a broker (BROKER_URL): each task has its own hub."
    }
  }
}

# --- Broker (replicas > 1) ---------------------------------------------------
#
# Valkey pub/sub carries every event to every task; nothing is stored in it.
# Two nodes with automatic failover: after a failover the tasks' probe finds
# a subscription left silent on the old primary and reconnects. Each task
# receives every event (publishes/s x replicas): size node_type for it.

resource "aws_security_group" "broker" {
  count = local.create_valkey ? 1 : 0

  name        = "${var.name}-broker"
  description = "Valkey broker of ${var.name}"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "broker_from_task" {
  count = local.create_valkey ? 1 : 0

  security_group_id            = aws_security_group.broker[0].id
  description                  = "From the tasks"
  referenced_security_group_id = aws_security_group.task.id
  ip_protocol                  = "tcp"
  from_port                    = local.valkey_port
  to_port                      = local.valkey_port
}

resource "aws_vpc_security_group_egress_rule" "task_to_broker" {
  count = local.create_valkey ? 1 : 0

  security_group_id            = aws_security_group.task.id
  description                  = "To the Valkey broker"
  referenced_security_group_id = aws_security_group.broker[0].id
  ip_protocol                  = "tcp"
  from_port                    = local.valkey_port
  to_port                      = local.valkey_port
}

# An existing broker: the task may reach it on var.broker_port, in the
# networks of var.broker_cidrs (its own security group must admit the task's).
resource "aws_vpc_security_group_egress_rule" "task_to_existing_broker" {
  for_each = local.broker_given ? toset(var.broker_cidrs) : toset([])

  security_group_id = aws_security_group.task.id
  description       = "To the existing broker"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.broker_port
  to_port           = var.broker_port
}

resource "aws_elasticache_subnet_group" "broker" {
  count = local.create_valkey ? 1 : 0

  name       = "${var.name}-broker"
  subnet_ids = var.task_subnet_ids
}

resource "aws_elasticache_replication_group" "broker" {
  count = local.create_valkey ? 1 : 0

  replication_group_id       = "${var.name}-broker"
  description                = "Pub/sub between the replicas of ${var.name}"
  engine                     = "valkey"
  engine_version             = "8.0"
  node_type                  = var.valkey_node_type
  port                       = local.valkey_port
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  subnet_group_name          = aws_elasticache_subnet_group.broker[0].name
  security_group_ids         = [aws_security_group.broker[0].id]
  apply_immediately          = true
}
