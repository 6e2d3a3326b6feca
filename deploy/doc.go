// Package deploy holds the deployment files of the service: Terraform for
// ECS Fargate (aws-ecs) and App Runner (aws-apprunner), and Kubernetes
// manifests (kubernetes). It has no code; its tests build the image's binary
// the way the Dockerfile does and keep the Dockerfile, apprunner.yaml and the
// files here in step with the code (variable names, port, health path, grace
// periods, one replica).
package deploy
