package server

import (
	"net/http"
	"net/http/pprof"

	"event-dispatcher/pkg/server/viewer"
)

// addRoutes lists every route the service answers. Each path accepts the
// methods named here plus OPTIONS (CORS preflight); anything else gets 405,
// and unknown paths 404, both with a JSON error body.
func (s *Server) addRoutes(mux *http.ServeMux) {
	ingest := s.limitPublish(s.handleIngest())
	stream := s.authorizeListener(s.limitStreams(s.handleStream()))
	health := s.handleHealth()
	cloudEvents := s.limitPublish(s.authorizePublisher(s.handleCloudEvents()))

	mux.Handle("/metrics", s.methods(map[string]http.Handler{"POST": ingest}))
	mux.Handle("/api/events", s.methods(map[string]http.Handler{"POST": ingest})) // path today's players use
	mux.Handle("/event-dispatcher", s.methods(map[string]http.Handler{"GET": stream}))
	// GET: the path today's consumer uses; POST: CloudEvents publishers.
	mux.Handle("/events", s.methods(map[string]http.Handler{"GET": stream, "POST": cloudEvents}))
	mux.Handle("/health", s.methods(map[string]http.Handler{"GET": health, "HEAD": health}))
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such path")
	}))

	// The live viewer: the page at exactly "/", and its script, style and
	// icon at /viewer/<file>.
	page := viewer.Handler()
	mux.Handle("/{$}", s.methods(map[string]http.Handler{"GET": page, "HEAD": page}))
	for _, path := range viewer.AssetPaths() {
		mux.Handle(path, s.methods(map[string]http.Handler{"GET": page, "HEAD": page}))
	}
}

// addAdminRoutes lists the routes of the admin listener (ADMIN_PORT), for
// operators and orchestrators only.
func (s *Server) addAdminRoutes(mux *http.ServeMux) {
	metrics := s.metrics.handler()
	live := s.handleLive()
	ready := s.handleHealth()

	mux.Handle("/metrics", s.methods(map[string]http.Handler{"GET": metrics}))
	mux.Handle("/livez", s.methods(map[string]http.Handler{"GET": live, "HEAD": live}))
	mux.Handle("/readyz", s.methods(map[string]http.Handler{"GET": ready, "HEAD": ready}))
	timed := oneProfile()
	mux.Handle("/debug/pprof/", timed(pprof.Index)) // and every named profile below it
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.Handle("/debug/pprof/profile", timed(pprof.Profile))
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.Handle("/debug/pprof/trace", timed(pprof.Trace))
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such path")
	}))
}
