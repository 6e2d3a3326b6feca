package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"event-dispatcher/pkg/brokerurl"
)

// redisSession is one connection for publishing and one subscribed to the
// channel, to Redis or Valkey. Redis drops a subscriber that falls far
// behind (client-output-buffer-limit pubsub): this one reads continuously
// and hands each message straight to the local hub, which never blocks.
type redisSession struct {
	*ending
	client  *redis.Client
	sub     *redis.PubSub
	channel string
	reading sync.WaitGroup
}

// dialRedis returns a dialFunc for rawURL. Publishing is never retried by
// the client: a retry after a timeout could deliver an event twice.
func dialRedis(rawURL, channel string, timeout time.Duration) (dialFunc, error) {
	base, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("BROKER_URL: %s", brokerurl.Scrub(err.Error(), rawURL)) // Validate passed: unreachable
	}
	base.MaxRetries = -1
	base.DialTimeout, base.ReadTimeout, base.WriteTimeout = timeout, timeout, timeout
	base.ContextTimeoutEnabled = true
	base.PoolSize = 2
	base.Protocol = 2           // plain RESP2 pub/sub: every Redis and Valkey version, no HELLO round trip
	base.DisableIdentity = true // no CLIENT SETINFO on each connection

	return func(ctx context.Context, deliver func([]byte)) (session, error) {
		opts := *base
		client := redis.NewClient(&opts)
		sub := client.Subscribe(ctx, channel)
		// The confirmation: from here on, nothing published is missed.
		if _, err := sub.ReceiveTimeout(ctx, timeout); err != nil {
			_ = sub.Close()
			_ = client.Close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		s := &redisSession{ending: newEnding(), client: client, sub: sub, channel: channel}
		s.reading.Add(1)
		go s.read(deliver)
		return s, nil
	}, nil
}

// read blocks on the subscription without a deadline: a connection that
// stays open but silent is the probe's to find.
func (s *redisSession) read(deliver func([]byte)) {
	defer s.reading.Done()
	for {
		m, err := s.sub.ReceiveTimeout(context.Background(), 0)
		if err != nil {
			s.end(fmt.Errorf("subscription: %w", err))
			return
		}
		if msg, ok := m.(*redis.Message); ok {
			deliver([]byte(msg.Payload))
		}
	}
}

func (s *redisSession) publish(ctx context.Context, msgs [][]byte) error {
	pipe := s.client.Pipeline()
	for _, m := range msgs {
		pipe.Publish(ctx, s.channel, m)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.end(fmt.Errorf("publish: %w", err))
		return err
	}
	return nil
}

// maxPayload: Redis carries up to proto-max-bulk-len (512 MB by default,
// never below 1 MB), far above the 16 MiB MAX_BODY_BYTES allows.
func (s *redisSession) maxPayload() int64 { return 0 }

func (s *redisSession) close() {
	s.end(nil)
	_ = s.sub.Close() // unblocks read
	_ = s.client.Close()
	s.reading.Wait()
}

// RouteClientLogs sends what the Redis client library logs by itself (it
// has one process-wide logger, which prints to stderr) to log at debug
// level: a dial failure is reported once per outage by the Broker, not by
// the library at every attempt. Call it once, at start.
func RouteClientLogs(log zerolog.Logger) { redis.SetLogger(redisLog{log}) }

type redisLog struct{ log zerolog.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug().Str("source", "go-redis").Msgf(format, v...)
}
