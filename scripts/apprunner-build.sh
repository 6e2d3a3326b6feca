#!/bin/sh
# Builds ./event_dispatcher from source where the installed Go is older than
# go.mod requires: App Runner's managed Go runtime (go1) ships Go 1.18, and
# go.mod asks for Go 1.26 (apprunner.yaml runs this script).
#
# Go 1.21 and later switch toolchains on their own (GOTOOLCHAIN). Go 1.18
# predates that and cannot even read this go.mod, so the script fetches the
# newer toolchain itself: Go releases are published on the Go module proxy as
# the module golang.org/toolchain, checked against the checksum database like
# any module. The old go command downloads it from a scratch module outside
# this repository, then the new one builds with the same flags as the
# Dockerfile.
#
# Environment: GO_TOOLCHAIN (default below; at least the go line of go.mod),
# VERSION (stamped into the binary, default dev), OUT (default
# ./event_dispatcher).
set -eu

GO_TOOLCHAIN="${GO_TOOLCHAIN:-go1.26.8}"
VERSION="${VERSION:-dev}"
OUT="${OUT:-./event_dispatcher}"

minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9][0-9]*\).*/\1/p')
if [ "${minor:-0}" -ge 21 ]; then
	# The go command downloads and runs the requested release itself.
	GO=go
	GOTOOLCHAIN="$GO_TOOLCHAIN"
	export GOTOOLCHAIN
else
	goos=$(go env GOOS)
	goarch=$(go env GOARCH)
	scratch=$(mktemp -d)
	trap 'rm -rf "$scratch"' EXIT
	(
		cd "$scratch"
		go mod init toolchainfetch >/dev/null 2>&1
		go mod download -json "golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.$goos-$goarch" >download.json
	)
	root=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' "$scratch/download.json")
	if [ ! -d "$root/bin" ]; then
		echo "apprunner-build: no toolchain in download result:" >&2
		cat "$scratch/download.json" >&2
		exit 1
	fi
	# Module zips carry no file modes: make the commands executable, as the
	# go command does for the toolchains it downloads.
	find "$root/bin" "$root/pkg/tool" -type f -exec chmod a+x {} +
	GO="$root/bin/go"
	# The new go must use its own standard library, whatever the image says.
	GOROOT="$root"
	GOTOOLCHAIN=local
	export GOROOT GOTOOLCHAIN
fi

"$GO" version
CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o "$OUT" ./cmd/event_dispatcher
