package main

import (
	"context"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/broker"
	"event-dispatcher/pkg/config"
	"event-dispatcher/pkg/server"
)

// ipFieldOverhead is what CLIENT_IP_FIELD adds to an event at most: the
// quotes, colon, comma and the longest IP.
const ipFieldOverhead = 6 + 45

// startBroker links this replica to the others when BROKER_URL is set:
// events from other replicas go to the local hub only. It returns a nil
// server.Broker and a no-op stop when BROKER_URL is empty.
func startBroker(cfg config.Config, hub *broadcast.Hub, log zerolog.Logger) (server.Broker, func(context.Context) error, error) {
	if cfg.BrokerURL == "" {
		return nil, func(context.Context) error { return nil }, nil
	}
	maxEvent := cfg.MaxBodyBytes
	if cfg.ClientIPField != "" {
		maxEvent += int64(len(cfg.ClientIPField)) + ipFieldOverhead
	}
	broker.RouteClientLogs(log)
	b, err := broker.New(broker.Options{
		URL:           cfg.BrokerURL,
		Channel:       cfg.BrokerChannel,
		Handler:       hub.Publish, // ErrBusy: counted as broker_dropped_busy
		Logger:        log,
		MaxEventBytes: maxEvent,
		LenientJSON:   !cfg.StrictJSON,
	})
	if err != nil {
		return nil, nil, err
	}
	return b, b.Close, nil
}

// withOrigin adds to a log line the replica's origin id, which every line
// of its broker link carries, so that the start-up line tells which
// replica's broker lines are whose.
func withOrigin(ev *zerolog.Event, relay server.Broker) *zerolog.Event {
	if b, ok := relay.(*broker.Broker); ok {
		return ev.Str("origin", b.Origin())
	}
	return ev
}
