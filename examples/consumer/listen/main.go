// Command listen runs the README's Go consumer (consumer.Listen): it prints
// the JSON of every event on a dispatcher's stream, one per line, and
// reconnects whenever the stream ends, until interrupted.
//
//	go run ./examples/consumer/listen http://localhost:3569/events
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"event-dispatcher/examples/consumer"
)

func main() {
	url := "http://localhost:3569/events"
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	consumer.Listen(ctx, url, func(data []byte) {
		_, _ = os.Stdout.Write(append(data, '\n'))
	})
}
