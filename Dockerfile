# Container image of the event dispatcher: a static binary on distroless,
# running as an unprivileged user, with no shell. The binary writes no file,
# so the container runs with a read-only root filesystem.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t event-dispatcher .
#   docker run --rm --read-only -p 3569:3569 event-dispatcher
#
# deploy/dockerfile_test.go runs the build command below outside Docker and
# checks the result, and deploy/drift_test.go keeps the port, health check
# and variables in step with the code.

# go.mod asks for Go 1.26: the builder must have at least that toolchain.
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo) so that it runs on distroless/static; -trimpath keeps
# build paths out of the binary; -X stamps the version it logs at start.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/event_dispatcher ./cmd/event_dispatcher

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/event_dispatcher /event_dispatcher
# The nonroot image's user (uid 65532); by number so that runtimes
# enforcing runAsNonRoot can check it without reading /etc/passwd.
USER 65532:65532
ENV PORT=3569
EXPOSE 3569
# Exec form: there is no shell in the image. The probe GETs /health on
# 127.0.0.1:$PORT and exits 1 unless it answers 200 (503 while draining).
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 CMD ["/event_dispatcher", "-healthcheck"]
ENTRYPOINT ["/event_dispatcher"]
