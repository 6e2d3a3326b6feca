// Package access holds the service's access rules, free of HTTP: who may
// listen (static tokens and HS256 JWTs), how often one client may publish
// and how many streams it may hold open, and how a client address is
// minimised before it is passed on. Every piece of per-client state is
// bounded, whatever the number of addresses a client rotates through.
//
// pkg/server applies these rules to requests; nothing here knows about
// routes, headers or status codes.
package access
