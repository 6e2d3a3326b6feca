package main

import (
	"github.com/rs/zerolog"

	"event-dispatcher/pkg/config"
	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/upstream"
)

// newUpstreams prepares the relay of UPSTREAM_URLS into the publish path's
// "upstream" door; with no URL it follows nothing. Its events reach the
// sinks, the broker included, like POSTs: with a broker, one replica only
// must follow a given upstream, or every listener gets each event once per
// following replica.
func newUpstreams(cfg config.Config, path *publish.Path, log zerolog.Logger) (*upstream.Relay, error) {
	if len(cfg.UpstreamURLs) > 0 && cfg.BrokerURL != "" {
		log.Warn().Int("upstreams", len(cfg.UpstreamURLs)).
			Msg("UPSTREAM_URLS with BROKER_URL: this replica publishes every upstream event to all replicas; set UPSTREAM_URLS on ONE replica only (e.g. a dedicated one-replica deployment), or each listener gets each event once per replica following it")
	}
	var door *publish.Door // counted in the door metrics only when used
	if len(cfg.UpstreamURLs) > 0 {
		// The first dispatcher set CLIENT_IP_FIELD; a feed is trusted by
		// configuration, so the field is kept as it came.
		door = path.Door("upstream").KeepClientIP()
	}
	ua := cfg.UpstreamUserAgent
	if ua == "" {
		ua = "event-dispatcher/" + version
	}
	return upstream.New(upstream.Options{
		URLs:          cfg.UpstreamURLs,
		EventTypes:    cfg.UpstreamEventTypes,
		Header:        cfg.UpstreamHeader,
		UserAgent:     ua,
		Logger:        log,
		MaxEventBytes: int(cfg.MaxBodyBytes),
		IdleTimeout:   cfg.UpstreamIdleTimeout,
	}, door)
}
