output "url" {
  description = "Public URL of the service."
  value       = "${lower(local.listener_protocol)}://${aws_lb.this.dns_name}"
}

output "internal_url" {
  description = "URL of the internal listener (every path), when internal_cidrs is set."
  value       = length(var.internal_cidrs) == 0 ? null : "${lower(local.listener_protocol)}://${aws_lb.this.dns_name}:${var.internal_port}"
}

output "service_name" {
  description = "ECS service name."
  value       = aws_ecs_service.this.name
}

output "log_group" {
  description = "CloudWatch Logs group of the task."
  value       = aws_cloudwatch_log_group.this.name
}

output "kinesis_stream_arn" {
  description = "The stream every event is put to; empty when kinesis_stream_name is."
  value       = local.kinesis_stream_arn
}

output "archive_delivery_stream" {
  description = "The Firehose delivery stream writing the events to S3; empty without archive_bucket_arn."
  value       = local.archive_on ? aws_kinesis_firehose_delivery_stream.archive[0].name : ""
}
