package broadcast

import (
	"fmt"
	"testing"
)

// The ring must hold every frame a subscriber loop may still look up:
// QueueSize in the stream's channel, 64 in the loop's own, 1 in the fan-out
// goroutine's hands and 1 stored before TryPublish answers.
func TestFrameRingCoversTheWorstCaseLag(t *testing.T) {
	for q := 1; q <= 5000; q++ {
		r := newFrameRing(q)
		n := len(r.slots)
		if n&(n-1) != 0 || n < q+64+1+1+1 {
			t.Fatalf("queue %d: ring of %d slots", q, n)
		}
	}
}

func TestFrameRingForgetsOverwrittenFrames(t *testing.T) {
	r := newFrameRing(1)
	n := uint64(len(r.slots))
	frames := make([]*frame, 2*n+1)
	for seq := uint64(1); seq <= 2*n; seq++ {
		frames[seq] = newFrame(fmt.Appendf(nil, `{"n":%d}`, seq))
		r.put(frames[seq], seq)
	}
	for seq := uint64(1); seq <= 2*n; seq++ {
		got := r.get(seq)
		switch {
		case seq <= n && got != nil:
			t.Fatalf("frame %d was overwritten but get returned %q", seq, got.b)
		case seq > n && got != frames[seq]:
			t.Fatalf("frame %d: got %v", seq, got)
		}
		if seq > n && string(got.ev.Data) != fmt.Sprint(seq) {
			t.Fatalf("frame %d carries %q through r3labs", seq, got.ev.Data)
		}
	}
}

func TestParseSeqReadsWhatR3labsPrints(t *testing.T) {
	for in, want := range map[string]uint64{"1\n": 1, "18446744073\n": 18446744073, "42": 42} {
		if got, ok := parseSeq([]byte(in)); !ok || got != want {
			t.Errorf("parseSeq(%q) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"\n", "", "x\n", "-1\n", "1 2\n", "12345678901234567890\n"} {
		if got, ok := parseSeq([]byte(in)); ok {
			t.Errorf("parseSeq(%q) = %d, accepted", in, got)
		}
	}
}
