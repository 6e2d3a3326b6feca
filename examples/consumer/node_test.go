//go:build unix

package consumer_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/testenv"
)

// npmPackages installs the locked npm packages of node/ (the eventsource
// package) into a copy of node/ of the test's own, with listen.js beside it
// as in the repository, and returns that copy of node/. Without node and
// npm, or without the npm registry, the test fails in CI and is skipped
// elsewhere.
func npmPackages(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, fmt.Sprintf("the EventSource test needs Node.js 20 or later and npm: %v", err))
		}
	}
	root := t.TempDir()
	dir := filepath.Join(root, "node")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for dst, src := range map[string]string{
		"node/package.json": "node/package.json", "node/package-lock.json": "node/package-lock.json",
		"node/run.js": "node/run.js", "listen.js": "listen.js",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Logf("npm ci:\n%s", out)
		testenv.Missing(t, fmt.Sprintf("npm ci failed, the npm registry out of reach? (the eventsource package): %v", err))
	}
	return dir
}

// runCommand runs a client that prints the data of each event on its own
// line, until the test ends.
func runCommand(t *testing.T, dir, name string, args ...string) client {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	// End the whole process group: a shell's children (curl, awk) would
	// otherwise keep the connection and stdout open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan string, 4096)
	var mu sync.Mutex
	var exit error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(events)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			select {
			case events <- sc.Text():
			case <-ctx.Done():
			}
		}
		err := cmd.Wait()
		mu.Lock()
		exit = errors.Join(err, errors.New(stderr.String()))
		mu.Unlock()
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return client{events: events, failed: func() error {
		mu.Lock()
		defer mu.Unlock()
		return exit
	}}
}

// The npm eventsource package (the WHATWG EventSource for Node.js), through
// the README's JavaScript: every event, none empty (an empty one would make
// its JSON.parse throw and end the process); it reconnects by itself after
// the server ends the stream, and the snippet starts it again after a 503.
func TestEventSourceListen(t *testing.T) {
	dir := npmPackages(t)
	run := func(t *testing.T, url string) client { return runCommand(t, dir, "node", "run.js", url) }
	checkScenarios(t, run)
}

// The Go consumer as the README runs it (go run ./examples/consumer/listen
// URL): the same scenarios through the built command.
func TestGoListenCommand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "listen")
	if out, err := exec.Command("go", "build", "-o", bin, "./listen").CombinedOutput(); err != nil {
		t.Fatalf("go build ./listen: %v\n%s", err, out)
	}
	run := func(t *testing.T, url string) client { return runCommand(t, ".", bin, url) }
	checkScenarios(t, run)
}
