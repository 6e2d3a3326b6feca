module event-dispatcher

go 1.24.0

require (
	github.com/kelseyhightower/envconfig v1.4.0
	github.com/r3labs/sse/v2 v2.10.0
	github.com/rs/zerolog v1.35.1
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	golang.org/x/net v0.0.0-20191116160921-f9c825593386 // indirect
	golang.org/x/sys v0.29.0 // indirect
	gopkg.in/cenkalti/backoff.v1 v1.1.0 // indirect
)
