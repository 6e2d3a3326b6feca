//go:build unix

package consumer_test

import (
	"fmt"
	"os/exec"
	"testing"

	"event-dispatcher/internal/testenv"
)

// The README's curl loop (listen.sh): every event, a new curl after the
// server ends the stream, and after a 503.
func TestCurlListen(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, fmt.Sprintf("the curl snippet test needs %s: %v", tool, err))
		}
	}
	run := func(t *testing.T, url string) client { return runCommand(t, ".", "bash", "listen.sh", url) }
	checkScenarios(t, run)
}
