package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"event-dispatcher/pkg/config"
)

// healthcheckTimeout bounds one probe. Orchestrators (Docker HEALTHCHECK, ECS
// container health checks) run the probe with their own timeout of a few
// seconds; giving up earlier lets the probe print why it failed.
const healthcheckTimeout = 2 * time.Second

// healthcheckFlag, as the first argument, turns the binary into a probe of
// an instance running on the same host. The runtime image has no shell and
// no curl, so the container health check runs the binary itself.
const healthcheckFlag = "-healthcheck"

// isHealthcheck reports whether args ask for the probe instead of the server.
func isHealthcheck(args []string) bool {
	return len(args) > 0 && (args[0] == healthcheckFlag || args[0] == "-"+healthcheckFlag)
}

// healthcheck GETs /health of the instance listening on the configured port
// on 127.0.0.1 (over HTTPS when TLS_CERT_FILE is set) and returns nil only for a 200. The port is resolved exactly
// as the server resolves it (PORT, its default, then -port in args), so the
// same environment gives the probe and the server the same port.
func healthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, stderr)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	if cfg.Port == "0" {
		return fmt.Errorf("healthcheck: port 0 is chosen by the system at start and cannot be probed; set PORT or pass -port")
	}
	scheme := "http"
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if cfg.TLS() {
		// The certificate names the public host, not 127.0.0.1; the probe
		// sends nothing secret and only reads this host's own answer.
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above
	}
	target := scheme + "://" + net.JoinHostPort("127.0.0.1", cfg.Port) + "/health"

	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	req.Header.Set("User-Agent", "event_dispatcher-healthcheck/"+version)
	// No proxy from the environment and no pooled connection: the probe must
	// reach this host's port directly, once.
	client := &http.Client{Transport: tr}
	resp, err := client.Do(req)
	if err != nil {
		// The client's error repeats the method and URL this one names.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", healthcheckTimeout)
		}
		return fmt.Errorf("healthcheck: GET %s: %w", target, err)
	}
	defer resp.Body.Close()
	// The health body is a small JSON object; the cap keeps a wrong
	// listener on this port from flooding the orchestrator's probe log.
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	body := strings.TrimSpace(string(raw))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s: %s", target, resp.Status, body)
	}
	fmt.Fprintf(stdout, "healthy: %s\n", body)
	return nil
}
