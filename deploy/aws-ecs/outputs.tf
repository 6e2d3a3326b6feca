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
