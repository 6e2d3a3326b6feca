package ssetest

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// StalledGRPCCall starts a gRPC call of method on c, a fresh connection
// to a gRPC port, as a raw HTTP/2 client: the HEADERS, then a message
// prefix announcing 100 bytes and one byte of them, never the rest. It
// returns the grpc-status the server ends the call with, waiting up to
// 30 s; it fails the test if the server closes the connection instead.
func StalledGRPCCall(t testing.TB, c net.Conn, method string) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", c.RemoteAddr().String()},
		{":path", method}, {"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteData(1, false, []byte{0, 0, 0, 0, 100, 'x'}); err != nil {
		t.Fatal(err)
	}
	status := ""
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == "grpc-status" {
			status = f.Value
		}
	})
	for status == "" {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("the stalled call did not end: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID == 1 {
				if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.GoAwayFrame:
			t.Fatalf("the connection was closed, not the call: %v", f.ErrCode)
		}
	}
	return status
}
