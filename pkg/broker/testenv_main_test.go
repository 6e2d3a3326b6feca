package broker

import (
	"testing"

	"event-dispatcher/internal/testenv"
)

// TestMain says, in one line, which tests were skipped for want of a
// program and why (see internal/testenv).
func TestMain(m *testing.M) { testenv.Main(m) }
