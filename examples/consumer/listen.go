// Package consumer holds the consumer snippets that README.md shows, so
// that tests run exactly the code users copy.
package consumer

import (
	"context"
	"log"
	"math/rand/v2"
	"time"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

// Listen hands the data of every event on the stream at url (for example
// "https://dispatcher.example/events") to handle, until ctx ends.
//
// r3labs' client retries a refused (503) or broken connection by itself,
// with a backoff from 0.5 s to 1 min apart that ignores Retry-After (bound
// to ctx here, or it keeps retrying after ctx ends). It returns nil when the
// server ends the stream cleanly (shutdown, MAX_STREAM_DURATION), and gives
// up on errors once a subscription is 15 minutes old: the loop reconnects in
// every case, after a random 1-3 s, so that listeners cut off together do
// not come back together. Events published while it is not connected are
// not replayed.
func Listen(ctx context.Context, url string, handle func(data []byte)) {
	for ctx.Err() == nil {
		// r3labs reads at most 64 KiB per event by default, less than one
		// event of the default MAX_BODY_BYTES with its "data: " prefix.
		client := sse.NewClient(url, sse.ClientMaxBufferSize(1<<20))
		client.ReconnectStrategy = backoff.WithContext(backoff.NewExponentialBackOff(), ctx)
		err := client.SubscribeRawWithContext(ctx, func(ev *sse.Event) {
			handle(ev.Data) // one JSON object; the stream has no other events
		})
		log.Printf("event stream ended (%v); reconnecting", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second + rand.N(2*time.Second)):
		}
	}
}
