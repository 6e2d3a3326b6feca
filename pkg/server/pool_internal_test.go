package server

import "testing"

// One large POST grows its body buffer; the pool must not keep it, or every
// later POST would hold that much memory.
func TestBodyPoolDropsGrownBuffers(t *testing.T) {
	s := &Server{}
	big := s.body()
	big.Grow(4 * maxPooledBody)
	s.putBody(big)
	for range 10 { // sync.Pool may return it at any Get: try a few
		if b := s.body(); b.Cap() > maxPooledBody {
			t.Fatalf("pool returned a %d-byte buffer, over the %d kept", b.Cap(), maxPooledBody)
		}
	}
}
