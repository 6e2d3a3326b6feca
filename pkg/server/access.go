package server

import (
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"event-dispatcher/pkg/access"
)

// authorizeListener lets a stream through only with a valid listener token
// (see package access), from an Authorization: Bearer header or, for
// browsers' EventSource, the access_token query parameter. Either way the
// token is taken out of the request before next sees it, so nothing
// downstream can read, match on or log it. Refusals are 401 with a JSON
// error that says only "missing" or "invalid", and WWW-Authenticate as RFC
// 6750 describes.
func (s *Server) authorizeListener(next http.Handler) http.Handler {
	auth := s.opts.Access.Listeners
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, bearer, r := takeToken(r)
		err := auth.Check(token)
		reason := access.Reason(err)
		if !bearer && auth.Required() {
			err = access.ErrInvalid // whatever the header holds, it is not a Bearer token
			reason = "Authorization header not Bearer <token>"
		}
		if err != nil {
			s.logRefusedListener(r, err, reason)
			challenge := `Bearer realm="event-dispatcher"`
			if errors.Is(err, access.ErrInvalid) {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			s.streamsRefused[refusedUnauthorized].Add(1)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorizePublisher lets a server-side publisher through (POST /events)
// only with a valid publisher token (PUBLISH_TOKENS) in an Authorization:
// Bearer header, never from the query: publishers are servers, which can
// set headers and keep a secret. The header is taken out of the request
// before next sees it. A refusal is 401 with WWW-Authenticate, answered
// before the body is read. The players' POST /api/events stays open: a
// player cannot keep a secret.
func (s *Server) authorizePublisher(next http.Handler) http.Handler {
	auth := s.opts.Access.Publishers
	if !auth.Required() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := access.BearerToken(r.Header.Get("Authorization"))
		err := auth.Check(token)
		if !ok {
			err = access.ErrInvalid // another scheme, or no token after Bearer
		}
		if err != nil {
			challenge := `Bearer realm="event-dispatcher"`
			if errors.Is(err, access.ErrInvalid) {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			s.refuseUnread(w, r, http.StatusUnauthorized, reasonUnauthorized, err.Error())
			return
		}
		r2 := r.WithContext(r.Context())
		r2.Header = r.Header.Clone()
		r2.Header.Del("Authorization")
		next.ServeHTTP(w, r2)
	})
}

// logRefusedListener says why a listener got 401, never with its token:
// once per reason and client per minute (logLimit). A missing or expired
// token is what a browser left open sends: info; the others (a bad
// signature, alg none...) are a misconfigured client or a probe: warn.
func (s *Server) logRefusedListener(r *http.Request, err error, reason string) {
	ip := s.clientIP(r)
	ok, unlogged := s.refusedAuth.allow(reason + " " + ip)
	if !ok {
		return
	}
	ev := s.opts.Logger.Warn()
	if errors.Is(err, access.ErrMissing) || reason == "JWT expired" {
		ev = s.opts.Logger.Info()
	}
	ev.Str("reason", reason).Str("client_ip", ip).Str("user_agent", r.UserAgent()).Uint64("refusals_not_logged", unlogged).
		Msg("listener refused: 401 (logged once per reason and client per minute)")
}

// takeToken returns the listener token of r and a request without it: the
// Authorization header wins over the query parameter. bearer is false when
// the header is not "Bearer <token>" (another scheme, or a bare token with
// no scheme): such a header is invalid, whatever it holds.
func takeToken(r *http.Request) (token string, bearer bool, out *http.Request) {
	authz := r.Header.Get("Authorization")
	rest, fromQuery, inQuery := takeParam(r.URL.RawQuery, access.QueryParam)
	if authz == "" && !inQuery {
		return "", true, r
	}
	token, bearer = fromQuery, true
	if authz != "" {
		token, bearer = access.BearerToken(authz)
	}
	r2 := r.WithContext(r.Context()) // shallow copy; URL and Header are replaced below
	u := *r.URL
	u.RawQuery = rest
	u.ForceQuery = false
	r2.URL = &u
	r2.RequestURI = u.RequestURI()
	if authz != "" {
		r2.Header = r.Header.Clone()
		r2.Header.Del("Authorization")
	}
	return token, bearer, r2
}

// takeParam returns rawQuery without any name=value pair, and the first
// such value, unescaped. Everything else is kept byte for byte, so whoever
// reads the query next sees exactly what the client sent, bar the token.
func takeParam(rawQuery, name string) (rest, value string, found bool) {
	if rawQuery == "" {
		return "", "", false
	}
	var kept []string
	for pair := range strings.SplitSeq(rawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if key, err := url.QueryUnescape(k); err != nil || key != name {
			kept = append(kept, pair)
			continue
		}
		if !found {
			value, _ = url.QueryUnescape(v)
			found = true
		}
	}
	if !found {
		return rawQuery, "", false
	}
	return strings.Join(kept, "&"), value, true
}

// redactedQuery is rawQuery for the log with every value, and every name
// without a value, replaced by REDACTED: only the names of the parameters
// and the separators are kept. The service reads no parameter but the
// listener token, and a token sent under another name or spelling
// (ACCESS_TOKEN=, token=, after a ';' that the token check does not split
// on, alone as ?<token>) must not reach the log either.
func redactedQuery(rawQuery string) string {
	var b strings.Builder
	for rawQuery != "" {
		pair, sep, rest := rawQuery, "", ""
		if i := strings.IndexAny(rawQuery, "&;"); i >= 0 {
			pair, sep, rest = rawQuery[:i], rawQuery[i:i+1], rawQuery[i+1:]
		}
		if name, _, ok := strings.Cut(pair, "="); ok {
			b.WriteString(name + "=")
		}
		if pair != "" {
			b.WriteString("REDACTED")
		}
		b.WriteString(sep)
		rawQuery = rest
	}
	return b.String()
}

// limitStreams refuses a stream with 429 while its client already holds
// MAX_LISTENERS_PER_IP open (503 when that is the default share, see
// access.NewStreamShare: the slots are kept for others, not rate limited), and counts the stream for exactly as long as
// next serves it: the hub returns only once the stream has ended, however
// it ended (client gone, dropped as slow, maximum duration, shutdown).
func (s *Server) limitStreams(next http.Handler) http.Handler {
	streams := s.opts.Access.Streams
	if streams == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := s.opts.ClientIP.Addr(r)
		if !streams.Acquire(ip) {
			w.Header().Set("Retry-After", "5")
			if streams.Shared() {
				s.streamsRefused[refusedShare].Add(1)
				streams.WarnShare(s.opts.Logger, ip)
				writeError(w, http.StatusServiceUnavailable, "this address holds its share of the listener slots; the rest are kept for others")
				return
			}
			s.streamsRefused[refusedRateLimited].Add(1)
			writeError(w, http.StatusTooManyRequests, "too many streams open from this address")
			return
		}
		defer streams.Release(ip)
		next.ServeHTTP(w, r)
	})
}

// limitPublish refuses a POST with 429 and Retry-After once its client has
// used up PUBLISH_RATE_PER_IP. It decides before the body is read, so a
// refused flood costs no more than a bad request.
func (s *Server) limitPublish(next http.Handler) http.Handler {
	limit := s.opts.Access.Publish
	if limit == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, wait := limit.Allow(s.opts.ClientIP.Addr(r), time.Now())
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, math.Ceil(wait.Seconds())))))
		s.refuseUnread(w, r, http.StatusTooManyRequests, reasonRateLimited, "too many events from this address; slow down")
	})
}

// refuseUnread answers a POST before reading its body, at once, and keeps
// the connection for the client's next request: the body is read and
// thrown away only after the answer has gone out, within BodyReadTimeout
// and MaxBodyBytes, as an accepted body would be. Closing the connection
// instead would make every refusal cost a new TCP connection (about twice
// the CPU of a bad request) and lose the requests pipelined behind it. A
// body that is too large or late, or that the client sends only after a
// 100 Continue it will not get, closes the connection.
//
// Over HTTP/2 the answer is all: net/http resets the stream, and with it
// whatever the client still sends, without touching the connection.
func (s *Server) refuseUnread(w http.ResponseWriter, r *http.Request, code int, why reason, msg string) {
	rc := http.NewResponseController(w)
	switch {
	case r.ContentLength == 0, r.ProtoMajor >= 2:
		s.reject(w, code, why, msg)
		return
	case r.ContentLength > s.opts.MaxBodyBytes, strings.EqualFold(r.Header.Get("Expect"), "100-continue"),
		w.Header().Get("Connection") == "close", // already closing (guardConn): nothing to keep
		rc.EnableFullDuplex() != nil:
		// Otherwise net/http would read the body before answering.
		closeAfter(w, r)
		s.reject(w, code, why, msg)
		return
	}
	s.reject(w, code, why, msg)
	if rc.Flush() != nil {
		return // the client is gone: net/http closes the connection
	}
	_ = rc.SetReadDeadline(time.Now().Add(s.opts.BodyReadTimeout))
	if _, err := io.CopyN(io.Discard, r.Body, s.opts.MaxBodyBytes+1); err == io.EOF {
		return // the whole body is in: the connection carries on
	}
	// What is left of the body must not be read as the next request.
	if conn, _, err := rc.Hijack(); err == nil {
		_ = conn.Close()
	}
}

// clientIP is the address written into events (CLIENT_IP_FIELD), truncated
// when CLIENT_IP_ANONYMIZE is set.
func (s *Server) clientIP(r *http.Request) string {
	if !s.opts.Access.AnonymizeIP {
		return s.opts.ClientIP.ClientIP(r)
	}
	if a := s.opts.ClientIP.Addr(r); a.IsValid() {
		return access.Anonymize(a).String()
	}
	return "" // not an IP address: nothing that could be truncated is passed on
}
