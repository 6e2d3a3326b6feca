package access

// Policy is the set of rules the HTTP server applies. The zero value keeps
// the service open: anyone may listen, nothing is limited, client
// addresses are passed on whole.
type Policy struct {
	Listeners   *Auth          // who may open a stream; nil: anyone
	Publishers  *Auth          // who may publish by the server-side ways in (CloudEvents, gRPC); nil: anyone
	Publish     *RateLimiter   // events per second per client; nil: unlimited
	Streams     *StreamLimiter // concurrent streams per client; nil: unlimited
	AnonymizeIP bool           // truncate the client address written into events
}
