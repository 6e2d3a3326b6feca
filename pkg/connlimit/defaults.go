package connlimit

// Headroom: the descriptors a Listener's default cap leaves to everything
// else the process opens (the admin port and its scrapes, broker and
// upstream connections, files, the runtime's own).
const (
	headroomShare = 10 // percent of the descriptor limit
	minHeadroom   = 64
)

// Defaults derives the caps from the process's descriptor limit nofile:
// Max keeps 10 % of it (at least 64 descriptors, at most half) for
// everything else; MaxPerClient is half of Max, so that no single address
// takes the whole port, but never less than listeners (MAX_SUBSCRIBERS)
// plus 10 % (within Max): one proxy not listed as trusted carried
// every listener the service admits before the caps existed, and still
// can. maxConns and perClient, when positive, are taken as given instead.
func Defaults(nofile uint64, maxConns, perClient, listeners int) Options {
	o := Options{Max: maxConns, MaxPerClient: perClient}
	if o.Max <= 0 {
		limit := int(min(nofile, 1<<31-1))
		reserve := min(max(limit*headroomShare/100, minHeadroom), limit/2)
		o.Max = max(limit-reserve, 1)
	}
	if o.MaxPerClient <= 0 {
		floor := 0
		if listeners > 0 {
			floor = min(o.Max, listeners+listeners/10) // and its POSTs and probes
		}
		o.MaxPerClient = max(o.Max/2, floor, 1)
	}
	return o
}

// streamShare is the part of Max (percent) that streams may take when the
// configured listeners would not leave room for anything else.
const streamShare = 90

// Listeners is how many concurrent listeners fit beside publishers and
// probes: listeners as configured (MAX_SUBSCRIBERS), but at most 90 % of
// Max when Max is set: past it, streams over HTTP/1.1 (one connection
// each) could hold every connection, and no POST or /health would get in.
func (o Options) Listeners(listeners int) int {
	if o.Max <= 0 {
		return listeners
	}
	return min(listeners, max(o.Max*streamShare/100, 1))
}
