package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"event-dispatcher/pkg/broker"
	"event-dispatcher/pkg/connlimit"
)

// reason is why an event POST was refused, as the rejected counter labels it.
type reason int

const (
	reasonTooLarge     reason = iota // 413
	reasonInvalid                    // 400: unreadable body or not an acceptable event
	reasonTimeout                    // 408: body not received in time
	reasonBusy                       // 503: publish queue full, or shutting down
	reasonRateLimited                // 429
	reasonForbidden                  // 403: page on an origin not listed
	reasonUnsupported                // 415: a CloudEvents format other than JSON
	reasonUnauthorized               // 401: PUBLISH_TOKENS set, no valid token
	numReasons
)

var reasonLabels = [numReasons]string{"too_large", "invalid", "timeout", "busy", "rate_limited", "forbidden", "unsupported", "unauthorized"}

// refusal is why a stream was refused before it started, as the
// listeners_refused counter labels it: what an operator alerts on when
// listeners cannot get in.
type refusal int

const (
	refusedCapacity     refusal = iota // 503: MAX_SUBSCRIBERS reached
	refusedDraining                    // 503: shutting down
	refusedRateLimited                 // 429: MAX_LISTENERS_PER_IP reached
	refusedUnauthorized                // 401: token missing or invalid
	refusedInvalid                     // 400: a malformed filter
	refusedShare                       // 503: the address holds its default share of MAX_SUBSCRIBERS
	refusedConnections                 // 429: MAX_CONNECTIONS_PER_IP reached, counting HTTP/2 streams
	numRefusals
)

var refusalLabels = [numRefusals]string{"capacity", "draining", "rate_limited", "unauthorized", "invalid", "ip_share", "connections_per_ip"}

// Histogram buckets: events are a few hundred bytes to MAX_BODY_BYTES;
// streams last from a page view to a day.
var (
	eventSizeBuckets      = prometheus.ExponentialBuckets(64, 2, 11) // 64 B .. 64 KiB
	streamDurationBuckets = []float64{1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 12 * 3600, 24 * 3600}
)

// metrics is the service's Prometheus registry. Counters the hub and the
// server keep anyway are read at scrape time by a collector, so counting
// costs the request paths nothing more; only the two histograms are
// observed as things happen, once per accepted POST and once per stream.
type metrics struct {
	registry       *prometheus.Registry
	eventSize      prometheus.Histogram
	streamDuration prometheus.Histogram
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		eventSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "event_dispatcher_event_size_bytes",
			Help:    "Size of each accepted event as fanned out (compact JSON).",
			Buckets: eventSizeBuckets,
		}),
		streamDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "event_dispatcher_stream_duration_seconds",
			Help:    "How long each ended SSE stream lasted.",
			Buckets: streamDurationBuckets,
		}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.eventSize, m.streamDuration, newCollector(s), newKinesisCollector(s.opts.Kinesis),
	)
	if s.opts.Conns != nil {
		m.registry.MustRegister(newConnCollector(s.opts.Conns))
	}
	if s.opts.Certificate != nil {
		m.registry.MustRegister(certificateMetrics(s.opts.Certificate)...)
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// collector turns the hub's and the server's counters into metrics when
// Prometheus scrapes.
type collector struct {
	s                                                             *Server
	listeners, accepted, rejected, deliveries, bytes, refused     *prometheus.Desc
	dropped, queueDepth, queueCapacity, stalled, lag              *prometheus.Desc
	draining, brokerUp, brokerIn, brokerErr, brokerRe, brokerDrop *prometheus.Desc
	doorEvents                                                    *prometheus.Desc
	upEvents, upConnected, upReconnects                           *prometheus.Desc
}

func newCollector(s *Server) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("event_dispatcher_"+name, help, labels, nil)
	}
	return &collector{
		s:             s,
		listeners:     d("listeners", "Connected SSE listeners."),
		accepted:      d("events_accepted_total", "Event POSTs accepted (204)."),
		rejected:      d("events_rejected_total", "Event POSTs and gRPC PushEvent calls refused, by reason.", "reason"),
		refused:       d("listeners_refused_total", "Streams refused before they started, by reason: capacity (MAX_SUBSCRIBERS), draining, rate_limited (MAX_LISTENERS_PER_IP), unauthorized, invalid (a malformed filter), ip_share (one address holding all of MAX_SUBSCRIBERS but the reserve kept for others), connections_per_ip (MAX_CONNECTIONS_PER_IP, each HTTP/2 stream beyond a connection's first counted as a connection).", "reason"),
		deliveries:    d("deliveries_total", "Events written to listeners' sockets."),
		bytes:         d("sent_bytes_total", "Bytes written to listeners' sockets, heartbeats included."),
		dropped:       d("listeners_dropped_total", "Listeners dropped, by reason: slow (queue full) or stalled (socket took nothing within WRITE_TIMEOUT).", "reason"),
		queueDepth:    d("publish_queue_depth", "Events accepted and not yet fanned out (fan-out lag)."),
		queueCapacity: d("publish_queue_capacity", "Events the publish queue holds before POSTs get 503 (PUBLISH_QUEUE_SIZE)."),
		lag:           d("fanout_lag_seconds", "Age of the oldest event not yet fanned out; POSTs get 503 beyond MAX_FANOUT_LAG."),
		stalled:       d("fanout_stalled", "1 while the fan-out makes no progress with work pending (/readyz and /health answer 503)."),
		draining:      d("draining", "1 once shutdown began (/readyz and /health answer 503)."),
		brokerUp:      d("broker_connected", "1 while the link to the broker is up; 0 without a broker."),
		brokerIn:      d("broker_messages_received_total", "Events received from the broker."),
		brokerErr:     d("broker_publish_errors_total", "Events that could not be published to the broker."),
		brokerRe:      d("broker_reconnects_total", "Times the link to the broker was re-established."),
		brokerDrop:    d("broker_messages_dropped_total", "Messages from the broker not delivered here, by reason: busy (local queue full), client (the NATS client's pending limit), invalid (an event ingest would refuse: not I-JSON, invalid UTF-8, over MAX_BODY_BYTES) or foreign (not written by this service).", "reason"),
		doorEvents:    d("door_events_total", "Events that came in at this replica, by way in (door: post, …) and outcome: accepted, invalid (refused by validation), busy (refused: saturated or shutting down).", "door", "outcome"),
		// One series per configured upstream (at most 64), labelled with
		// its URL without credentials.
		upEvents:     d("upstream_events_total", "Events read from each upstream SSE feed (UPSTREAM_URLS), by outcome: accepted, invalid (not one strict JSON object), too_large (beyond MAX_BODY_BYTES), busy (fan-out saturated), skipped (type not in UPSTREAM_EVENT_TYPES).", "upstream", "outcome"),
		upConnected:  d("upstream_connected", "1 while the stream of the upstream is open.", "upstream"),
		upReconnects: d("upstream_reconnects_total", "Times the relay connected again to the upstream, after an end, an error or the idle watchdog.", "upstream"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.listeners, c.accepted, c.rejected, c.refused, c.deliveries, c.bytes, c.dropped, c.queueDepth, c.queueCapacity,
		c.lag, c.stalled, c.draining, c.brokerUp, c.brokerIn, c.brokerErr, c.brokerRe, c.brokerDrop, c.doorEvents,
		c.upEvents, c.upConnected, c.upReconnects,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	hc := s.opts.Hub.Counters()
	var b broker.Stats // without a broker: not connected, nothing received
	if s.opts.Broker != nil {
		b = s.opts.Broker.Stats()
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.listeners, float64(hc.Listeners))
	counter(c.accepted, hc.EventsAccepted)
	for r := range numReasons {
		counter(c.rejected, s.rejected[r].Load(), reasonLabels[r])
	}
	for r := range numRefusals {
		counter(c.refused, s.streamsRefused[r].Load(), refusalLabels[r])
	}
	counter(c.deliveries, hc.Deliveries)
	counter(c.bytes, hc.BytesSent)
	counter(c.dropped, hc.DroppedSlow, "slow")
	counter(c.dropped, hc.DroppedStalled, "stalled")
	gauge(c.queueDepth, float64(hc.FanoutLagEvents))
	gauge(c.queueCapacity, float64(hc.QueueCapacity))
	gauge(c.lag, hc.FanoutLagSeconds)
	gauge(c.stalled, flag(!s.opts.Hub.Healthy()))
	gauge(c.draining, flag(s.draining.Load()))
	gauge(c.brokerUp, flag(b.State == broker.Connected))
	counter(c.brokerIn, b.Received)
	counter(c.brokerErr, b.PublishErrors)
	counter(c.brokerRe, b.Reconnects)
	counter(c.brokerDrop, b.DroppedBusy, "busy")
	counter(c.brokerDrop, b.DroppedClient, "client")
	counter(c.brokerDrop, b.Invalid, "invalid")
	counter(c.brokerDrop, b.Foreign-b.Invalid, "foreign")
	for _, d := range s.opts.Publish.Stats() {
		counter(c.doorEvents, d.Accepted, d.Name, "accepted")
		counter(c.doorEvents, d.Invalid, d.Name, "invalid")
		counter(c.doorEvents, d.Busy, d.Name, "busy")
	}
	for _, u := range s.opts.Upstreams() {
		counter(c.upEvents, u.Events, u.URL, "accepted")
		counter(c.upEvents, u.DroppedInvalid, u.URL, "invalid")
		counter(c.upEvents, u.DroppedTooLarge, u.URL, "too_large")
		counter(c.upEvents, u.DroppedBusy, u.URL, "busy")
		counter(c.upEvents, u.Skipped, u.URL, "skipped")
		gauge(c.upConnected, flag(u.Connected()), u.URL)
		counter(c.upReconnects, u.Reconnects, u.URL)
	}
}

// connCollector reads the public port's connection caps at scrape time.
type connCollector struct {
	conns               ConnCounter
	open, max, maxPerIP *prometheus.Desc
	refused, closedIdle *prometheus.Desc
	closedBusy          *prometheus.Desc
}

func newConnCollector(conns ConnCounter) *connCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("event_dispatcher_"+name, help, labels, nil)
	}
	return &connCollector{
		conns:      conns,
		open:       d("connections", "TCP connections held on the public port and the gRPC port."),
		max:        d("connections_max", "Cap on the public and gRPC ports' connections (MAX_CONNECTIONS, or derived from the descriptor limit)."),
		maxPerIP:   d("connections_max_per_ip", "Cap on one client IP's connections (MAX_CONNECTIONS_PER_IP, or derived)."),
		refused:    d("connections_refused_total", "New connections closed at once, every connection in the way being busy, by cap: total (MAX_CONNECTIONS) or per_ip (MAX_CONNECTIONS_PER_IP).", "reason"),
		closedIdle: d("connections_idle_closed_total", "Idle keep-alive or silent connections closed to make room for a new one, by cap: total or per_ip.", "reason"),
		closedBusy: d("connections_busy_closed_total", "Connections with a request in flight (never a stream) closed to make room at MAX_CONNECTIONS, nothing being idle: the longest-busy of the address with the most requests in flight, over its share."),
	}
}

func (c *connCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.open, c.max, c.maxPerIP, c.refused, c.closedIdle, c.closedBusy} {
		ch <- d
	}
}

func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.conns.Stats()
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(s.Open))
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(s.Max))
	ch <- prometheus.MustNewConstMetric(c.maxPerIP, prometheus.GaugeValue, float64(s.MaxPerClient))
	for _, r := range []connlimit.Reason{connlimit.Total, connlimit.PerClient} {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(s.Refused[r]), r.String())
		ch <- prometheus.MustNewConstMetric(c.closedIdle, prometheus.CounterValue, float64(s.ClosedIdle[r]), r.String())
	}
	ch <- prometheus.MustNewConstMetric(c.closedBusy, prometheus.CounterValue, float64(s.ClosedBusy))
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// EventRefused counts an event refused by another way in (gRPC PushEvent)
// in events_rejected_total, reason being one of its labels (rate_limited,
// unauthorized, invalid, too_large, busy); an unknown one is not counted.
func (s *Server) EventRefused(reason string) {
	for r, label := range reasonLabels {
		if label == reason {
			s.rejected[r].Add(1)
		}
	}
}

// StreamRefused counts a stream refused by another way out (gRPC
// Subscribe) in listeners_refused_total, reason being one of its labels
// (capacity, draining, rate_limited, unauthorized, invalid, ip_share).
func (s *Server) StreamRefused(reason string) {
	for r, label := range refusalLabels {
		if label == reason {
			s.streamsRefused[r].Add(1)
		}
	}
}
