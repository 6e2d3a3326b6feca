# --- Kinesis: every event to a data stream, and optionally to S3 -------------
#
# With kinesis_stream_name set, every task puts each event it accepts to
# that stream (KINESIS_STREAM_NAME); the task role may call PutRecords on
# it and nothing else. create_kinesis_stream creates it in on-demand mode;
# otherwise it must exist. With archive_bucket_arn set, a Firehose delivery
# stream reads the stream and writes every event to that bucket, one JSON
# object per line, GZIP-compressed, under a date prefix.

locals {
  kinesis_on         = var.kinesis_stream_name != ""
  kinesis_stream_arn = !local.kinesis_on ? "" : (var.create_kinesis_stream ? aws_kinesis_stream.events[0].arn : data.aws_kinesis_stream.events[0].arn)
  archive_on         = local.kinesis_on && var.archive_bucket_arn != ""
}

resource "aws_kinesis_stream" "events" {
  count = local.kinesis_on && var.create_kinesis_stream ? 1 : 0

  name             = var.kinesis_stream_name
  retention_period = var.kinesis_retention_hours
  encryption_type  = "KMS"
  kms_key_id       = "alias/aws/kinesis" # the AWS-managed key: producers need no KMS permission

  stream_mode_details {
    stream_mode = "ON_DEMAND"
  }
}

data "aws_kinesis_stream" "events" {
  count = local.kinesis_on && !var.create_kinesis_stream ? 1 : 0

  name = var.kinesis_stream_name
}

# The task role: what the service itself may do. Only PutRecords on the
# stream: the SDK makes no other call.
resource "aws_iam_role" "task" {
  count = local.kinesis_on ? 1 : 0

  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "put_records" {
  count = local.kinesis_on ? 1 : 0

  statement {
    actions   = ["kinesis:PutRecords"]
    resources = [local.kinesis_stream_arn]
  }
}

resource "aws_iam_role_policy" "put_records" {
  count = local.kinesis_on ? 1 : 0

  name   = "${var.name}-kinesis-put"
  role   = aws_iam_role.task[0].id
  policy = data.aws_iam_policy_document.put_records[0].json
}

# --- Firehose to S3 ------------------------------------------------------------

data "aws_caller_identity" "current" {}

# Firehose assumes the role only for delivery streams of this account (it
# passes the account as the external id): another account's Firehose cannot
# be pointed at this role to read the stream or write the bucket.
data "aws_iam_policy_document" "firehose_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["firehose.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "sts:ExternalId"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "firehose" {
  count = local.archive_on ? 1 : 0

  name               = "${var.name}-firehose"
  assume_role_policy = data.aws_iam_policy_document.firehose_assume.json
}

data "aws_iam_policy_document" "firehose" {
  count = local.archive_on ? 1 : 0

  statement {
    actions   = ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetShardIterator", "kinesis:GetRecords", "kinesis:ListShards"]
    resources = [local.kinesis_stream_arn]
  }
  statement {
    actions   = ["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:PutObject"]
    resources = [var.archive_bucket_arn, "${var.archive_bucket_arn}/*"]
  }
  statement {
    actions   = ["logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.firehose[0].arn}:*"]
  }
}

resource "aws_iam_role_policy" "firehose" {
  count = local.archive_on ? 1 : 0

  name   = "${var.name}-firehose"
  role   = aws_iam_role.firehose[0].id
  policy = data.aws_iam_policy_document.firehose[0].json
}

resource "aws_cloudwatch_log_group" "firehose" {
  count = local.archive_on ? 1 : 0

  name              = "/aws/kinesisfirehose/${var.name}-archive"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_stream" "firehose" {
  count = local.archive_on ? 1 : 0

  name           = "S3Delivery"
  log_group_name = aws_cloudwatch_log_group.firehose[0].name
}

resource "aws_kinesis_firehose_delivery_stream" "archive" {
  count = local.archive_on ? 1 : 0

  name        = "${var.name}-archive"
  destination = "extended_s3"

  kinesis_source_configuration {
    kinesis_stream_arn = local.kinesis_stream_arn
    role_arn           = aws_iam_role.firehose[0].arn
  }

  extended_s3_configuration {
    role_arn   = aws_iam_role.firehose[0].arn
    bucket_arn = var.archive_bucket_arn
    # An object per buffer flush: whichever comes first.
    buffering_interval = var.archive_buffer_seconds
    buffering_size     = var.archive_buffer_mb
    compression_format = "GZIP"
    # Hive-style date partitions, ready for Athena or Glue; the time is
    # when Firehose received the record (UTC).
    prefix              = "${var.archive_prefix}year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/"
    error_output_prefix = "${var.archive_prefix}errors/!{firehose:error-output-type}/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/"

    # Records are events without a line end: one per line in S3 (JSON Lines).
    processing_configuration {
      enabled = true
      processors {
        type = "AppendDelimiterToRecord"
      }
    }

    cloudwatch_logging_options {
      enabled         = true
      log_group_name  = aws_cloudwatch_log_group.firehose[0].name
      log_stream_name = aws_cloudwatch_log_stream.firehose[0].name
    }
  }
}
