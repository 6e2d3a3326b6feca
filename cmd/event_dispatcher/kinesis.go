package main

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/config"
	"event-dispatcher/pkg/kinesis"
)

// startKinesis starts forwarding every event accepted here to the stream
// KINESIS_STREAM_NAME names; nil when it is empty. No call is made at
// start: a stream unreachable now is retried like one lost later.
func startKinesis(cfg config.Config, log zerolog.Logger) (*kinesis.Sink, error) {
	if cfg.KinesisStreamName == "" {
		return nil, nil
	}
	// Loading the configuration may read files or ask the container's
	// credentials endpoint; it never waits for Kinesis.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := kinesis.NewClient(ctx, cfg.KinesisStreamName, log)
	if err != nil {
		return nil, err
	}
	return kinesis.New(kinesis.Options{
		Stream:        cfg.KinesisStreamName,
		Client:        client,
		KeyField:      cfg.KinesisPartitionKeyField,
		BufferBytes:   cfg.KinesisBufferBytes,
		FlushInterval: cfg.KinesisFlushInterval,
		Logger:        log,
	})
}
