package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"event-dispatcher/internal/testenv"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/config"
	"event-dispatcher/pkg/connlimit"
	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/server"
	"event-dispatcher/pkg/upstream"
)

// These tests fail when a deployment file stops matching the code: a
// variable the service does not read, a port it does not listen on, a health
// path it does not serve, a grace period shorter than its shutdown, more
// than one replica without a broker.

const (
	ecsDir       = "aws-ecs"
	appRunnerDir = "aws-apprunner"
	k8sDir       = "kubernetes"

	// imageUser is the distroless nonroot user the image runs as.
	imageUser = "65532"
	// appRunnerRequestLimit is App Runner's cut-off for every request.
	appRunnerRequestLimit = 120 * time.Second
	// streamJitter is the spread the hub applies to MAX_STREAM_DURATION.
	streamJitter = 0.15
	// fargateMaxStopTimeout is the largest stopTimeout Fargate accepts.
	fargateMaxStopTimeout = 120 * time.Second
)

func loadDockerfile(t *testing.T) dockerfile {
	t.Helper()
	df, err := parseDockerfile(readFile(t, "Dockerfile"))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return df
}

// dockerfileEnv is the runtime stage's ENV.
func dockerfileEnv(t *testing.T, df dockerfile) envSource {
	t.Helper()
	src := envSource{File: "Dockerfile", Values: map[string]string{}}
	for _, in := range df.Stages[len(df.Stages)-1].all("ENV") {
		kv, err := keyValues(in.Args, nil)
		if err != nil {
			t.Fatalf("Dockerfile line %d: %v", in.Line, err)
		}
		for _, k := range sortedKeys(kv) {
			src.Names = append(src.Names, k)
			src.Values[k] = kv[k]
		}
	}
	return src
}

func loadK8s(t *testing.T) k8sObjects {
	t.Helper()
	objs, err := decodeManifests(filepath.Join(repoRoot(t), "deploy", k8sDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Deployments) != 1 {
		t.Fatalf("%s: %d Deployments, want 1", k8sDir, len(objs.Deployments))
	}
	return objs
}

// serviceContainer is the Deployment's container running the image.
func serviceContainer(t *testing.T, objs k8sObjects) corev1.Container {
	t.Helper()
	cs := objs.Deployments[0].Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%s: %d containers, want 1", k8sDir, len(cs))
	}
	return cs[0]
}

// allEnvSources is every place that sets service variables.
func allEnvSources(t *testing.T) []envSource {
	t.Helper()
	return []envSource{
		dockerfileEnv(t, loadDockerfile(t)),
		loadAppRunner(t).envSource(),
		loadTF(t, filepath.Join("deploy", ecsDir)).envSource(),
		loadTF(t, filepath.Join("deploy", appRunnerDir)).envSource(),
		containerEnv(serviceContainer(t, loadK8s(t)), filepath.Join("deploy", k8sDir)),
	}
}

func TestEveryVariableSetIsReadByTheService(t *testing.T) {
	known := configDefaults()
	for _, src := range allEnvSources(t) {
		if len(src.Names) == 0 {
			t.Errorf("%s: found no variables; the file layout changed and this test no longer sees them", src.File)
		}
		for _, name := range src.Names {
			if _, ok := known[name]; !ok {
				t.Errorf("%s sets %s, which the service does not read (it reads %s)", src.File, name, strings.Join(sortedKeys(known), ", "))
			}
		}
		// The service's own loader validates the literal values.
		if _, err := loadConfig(t, src); err != nil {
			t.Errorf("%s: the service rejects these settings: %v", src.File, err)
		}
	}
}

func TestTerraformKnowsExactlyTheServiceVariables(t *testing.T) {
	want := sortedKeys(configDefaults())
	for _, dir := range []string{ecsDir, appRunnerDir} {
		m := loadTF(t, filepath.Join("deploy", dir))
		got := m.list(t, "known_environment")
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: known_environment = %v, want the service's variables %v", dir, got, want)
		}
	}
}

// mustLoad is the configuration the service reads from src's settings.
func mustLoad(t *testing.T, src envSource) config.Config {
	t.Helper()
	cfg, err := loadConfig(t, src)
	if err != nil {
		t.Fatalf("%s: %v", src.File, err)
	}
	return cfg
}

func TestPortsAgree(t *testing.T) {
	defPort := configDefaults()["PORT"]

	t.Run("Dockerfile", func(t *testing.T) {
		df := loadDockerfile(t)
		exposes := df.Stages[len(df.Stages)-1].all("EXPOSE")
		if len(exposes) != 1 {
			t.Fatalf("%d EXPOSE instructions, want 1", len(exposes))
		}
		exposed := strings.TrimSuffix(exposes[0].Args, "/tcp")
		if exposed != defPort {
			t.Errorf("EXPOSE %s, but the service's default PORT is %s", exposed, defPort)
		}
		if p := mustLoad(t, dockerfileEnv(t, df)).Port; p != exposed {
			t.Errorf("EXPOSE %s, but with the image's ENV the service listens on %s", exposed, p)
		}
	})

	t.Run("apprunner.yaml", func(t *testing.T) {
		c := loadAppRunner(t)
		if p := mustLoad(t, c.envSource()).Port; p != strconv.Itoa(c.Run.Network.Port) {
			t.Errorf("network.port %d, but the service listens on %s (network.env %q)", c.Run.Network.Port, p, c.Run.Network.Env)
		}
	})

	for _, dir := range []string{ecsDir, appRunnerDir} {
		t.Run(dir, func(t *testing.T) {
			m := loadTF(t, filepath.Join("deploy", dir))
			port := m.only(t, "container_port")
			if p := mustLoad(t, m.envSource()).Port; p != port {
				t.Errorf("container_port %s, but with its environment the service listens on %s", port, p)
			}
		})
	}

	t.Run(k8sDir, func(t *testing.T) {
		objs := loadK8s(t)
		c := serviceContainer(t, objs)
		cfg := mustLoad(t, containerEnv(c, k8sDir))
		// The public port is named http, the admin port admin.
		want := map[string]string{"http": cfg.Port, "admin": cfg.AdminPort}
		byName := map[string]int32{}
		for _, cp := range c.Ports {
			byName[cp.Name] = cp.ContainerPort
			if p, ok := want[cp.Name]; !ok || strconv.Itoa(int(cp.ContainerPort)) != p {
				t.Errorf("containerPort %d (%s), but the service listens on %v", cp.ContainerPort, cp.Name, want)
			}
		}
		for name := range want {
			if _, ok := byName[name]; !ok {
				t.Errorf("no containerPort named %s for the service's port %s", name, want[name])
			}
		}
		resolve := func(what string, v intstr.IntOrString, port string) {
			n := v.IntVal
			if v.Type == intstr.String {
				var ok bool
				if n, ok = byName[v.StrVal]; !ok {
					t.Errorf("%s: no container port named %q", what, v.StrVal)
					return
				}
			}
			if strconv.Itoa(int(n)) != port {
				t.Errorf("%s targets port %d, but the service serves it on %s", what, n, port)
			}
		}
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if pr != nil && pr.HTTPGet != nil {
				port := cfg.Port
				if adminPaths[pr.HTTPGet.Path] {
					port = cfg.AdminPort
				}
				resolve("probe "+pr.HTTPGet.Path, pr.HTTPGet.Port, port)
			}
		}
		// Only the public port is reachable through a Service.
		for _, svc := range objs.Services {
			for _, sp := range svc.Spec.Ports {
				resolve("Service "+svc.Name+" port "+sp.Name, sp.TargetPort, cfg.Port)
			}
		}
		if a := objs.Deployments[0].Spec.Template.Annotations; a["prometheus.io/port"] != cfg.AdminPort || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("prometheus.io annotations %v, but metrics are served on port %s, /metrics", a, cfg.AdminPort)
		}
	})
}

// adminPaths are the paths served on ADMIN_PORT rather than PORT.
var adminPaths = map[string]bool{"/livez": true, "/readyz": true, "/metrics": true}

// healthPaths are the health-check paths the deployment files configure.
func healthPaths(t *testing.T) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, dir := range []string{ecsDir, appRunnerDir} {
		m := loadTF(t, filepath.Join("deploy", dir))
		paths[dir] = m.only(t, "path")
	}
	c := serviceContainer(t, loadK8s(t))
	for name, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s probe", k8sDir, name)
			continue
		}
		paths[k8sDir+" "+name] = pr.HTTPGet.Path
	}
	return paths
}

// newServer is the service's HTTP handler on a real hub, closed at cleanup;
// its Admin handler serves the admin port.
func newServer(t *testing.T) *server.Server {
	t.Helper()
	hub, err := broadcast.New(broadcast.Options{QueueSize: 16, MaxListeners: 4, BufferBytes: 1 << 16, WriteTimeout: time.Second, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hub.Close(ctx)
	})
	// One upstream feed (never started) so that its metrics are exported.
	path := publish.New(publish.Options{Hub: hub})
	feeds, err := upstream.New(upstream.Options{URLs: []string{"https://feed.example/stream"}}, path.Door("upstream"))
	if err != nil {
		t.Fatal(err)
	}
	// A connection-capped listener (never served) so that the caps' metrics
	// are exported.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return server.New(server.Options{Hub: hub, Logger: zerolog.Nop(), MaxBodyBytes: 1 << 10, BodyReadTimeout: time.Second, ClientIP: clientip.New(nil),
		Publish: path, Upstreams: feeds.Stats, Conns: connlimit.New(ln, connlimit.Options{Max: 8, MaxPerClient: 4})})
}

func TestHealthPathsAreServed(t *testing.T) {
	srv := newServer(t)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	admin := httptest.NewServer(srv.Admin())
	t.Cleanup(admin.Close)

	for where, p := range healthPaths(t) {
		base := ts.URL
		if adminPaths[p] {
			base = admin.URL
		}
		resp, err := ts.Client().Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Status string `json:"status"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || body.Status != "ok" {
			t.Errorf("%s checks %s: the service answers %d, status %q (%v); want 200 from its health route", where, p, resp.StatusCode, body.Status, err)
		}
	}
}

func TestGracePeriodsCoverShutdown(t *testing.T) {
	t.Run(k8sDir, func(t *testing.T) {
		objs := loadK8s(t)
		c := serviceContainer(t, objs)
		cfg := mustLoad(t, containerEnv(c, k8sDir))
		var preStop time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		gp := objs.Deployments[0].Spec.Template.Spec.TerminationGracePeriodSeconds
		if gp == nil {
			t.Fatal("terminationGracePeriodSeconds not set (default 30 s): set it explicitly")
		}
		if grace := time.Duration(*gp) * time.Second; grace <= preStop+cfg.DrainDelay+cfg.ShutdownTimeout {
			t.Errorf("terminationGracePeriodSeconds %v does not exceed the preStop sleep %v + DRAIN_DELAY %v + SHUTDOWN_TIMEOUT %v", grace, preStop, cfg.DrainDelay, cfg.ShutdownTimeout)
		}
	})

	t.Run(ecsDir, func(t *testing.T) {
		m := loadTF(t, filepath.Join("deploy", ecsDir))
		cfg := mustLoad(t, m.envSource())
		shutdown := cfg.ShutdownTimeout
		stop := m.seconds(t, "stop_timeout")
		if stop <= cfg.DrainDelay+shutdown {
			t.Errorf("stop_timeout %v does not exceed DRAIN_DELAY %v + SHUTDOWN_TIMEOUT %v: ECS kills the task mid-shutdown", stop, cfg.DrainDelay, shutdown)
		}
		if stop > fargateMaxStopTimeout {
			t.Errorf("stop_timeout %v exceeds Fargate's maximum %v", stop, fargateMaxStopTimeout)
		}
		if d := m.seconds(t, "deregistration_delay"); d <= shutdown {
			t.Errorf("deregistration_delay %v does not exceed SHUTDOWN_TIMEOUT %v", d, shutdown)
		}
		if raws := m.attr("stopTimeout"); len(raws) != 1 || raws[0] != "local.stop_timeout" {
			t.Errorf("the container's stopTimeout = %v, want local.stop_timeout", raws)
		}
		if raws := m.attr("deregistration_delay"); len(raws) != 2 { // the local and its use
			t.Errorf("deregistration_delay assigned %d times, want the local and the target group", len(raws))
		}
	})
}

func TestStreamsOutliveNoTimeout(t *testing.T) {
	t.Run("App Runner's 120 s request limit", func(t *testing.T) {
		for _, src := range []envSource{loadAppRunner(t).envSource(), loadTF(t, filepath.Join("deploy", appRunnerDir)).envSource()} {
			cfg := mustLoad(t, src)
			longest := time.Duration(float64(cfg.MaxStreamDuration) * (1 + streamJitter)).Round(time.Millisecond)
			if cfg.MaxStreamDuration <= 0 || longest >= appRunnerRequestLimit {
				t.Errorf("%s: MAX_STREAM_DURATION %v (up to %v with jitter) must be set and end streams before App Runner's %v limit", src.File, cfg.MaxStreamDuration, longest, appRunnerRequestLimit)
			}
		}
	})
	t.Run("ALB idle timeout", func(t *testing.T) {
		m := loadTF(t, filepath.Join("deploy", ecsDir))
		cfg := mustLoad(t, m.envSource())
		idle := m.seconds(t, "idle_timeout")
		if cfg.HeartbeatInterval <= 0 || idle <= cfg.HeartbeatInterval {
			t.Errorf("idle_timeout %v must exceed HEARTBEAT_INTERVAL %v, or idle streams are cut", idle, cfg.HeartbeatInterval)
		}
		// A load balancer keeping idle upstream connections longer than the
		// service reuses connections the service is closing: 502s.
		keepAlive := newServer(t).HTTPServer().IdleTimeout
		if idle >= keepAlive {
			t.Errorf("idle_timeout %v must stay below the service's keep-alive timeout %v", idle, keepAlive)
		}
	})
}

// TestMoreThanOneReplicaNeedsABroker: every replica has its own hub, so a
// second one is only allowed where BROKER_URL joins them.
func TestMoreThanOneReplicaNeedsABroker(t *testing.T) {
	objs := loadK8s(t)
	env := containerEnv(serviceContainer(t, objs), filepath.Join("deploy", k8sDir))
	if r := objs.Deployments[0].Spec.Replicas; r == nil || (*r != 1 && !slices.Contains(env.Names, "BROKER_URL")) {
		t.Errorf("%s: replicas %s without BROKER_URL: each replica has its own hub", k8sDir, fmtPtr(r))
	}
	checkKubernetesBrokerExample(t)

	ecs := loadTF(t, filepath.Join("deploy", ecsDir))
	if got := ecs.attr("desired_count"); !slices.Equal(got, []string{"var.replicas"}) {
		t.Errorf("%s: desired_count = %v, want var.replicas (guarded by the broker precondition)", ecsDir, got)
	}
	ecsText := strings.Join(ecs.lines, "\n")
	for _, want := range []string{
		`condition     = var.replicas == 1 || local.has_broker`,
		`!local.has_broker || local.broker_secret ? {} : {`,
		`BROKER_URL = local.broker_url`,
		`create_valkey = var.replicas > 1 && !local.broker_given`,
	} {
		if !strings.Contains(ecsText, want) {
			t.Errorf("%s: lacks %q: replicas > 1 must come with a broker wired into BROKER_URL", ecsDir, want)
		}
	}

	ar := loadTF(t, filepath.Join("deploy", appRunnerDir))
	if lo, hi := ar.only(t, "min_size"), ar.attr("max_size"); lo != "1" || !slices.Equal(hi, []string{"var.max_instances"}) {
		t.Errorf("%s: min_size %s, max_size %v, want 1 and var.max_instances", appRunnerDir, lo, hi)
	}
	if !strings.Contains(strings.Join(ar.lines, "\n"), `condition     = var.max_instances == 1 || (var.max_instances > 1 && (contains(keys(var.environment), "BROKER_URL") || contains(keys(var.secrets), "BROKER_URL")))`) {
		t.Errorf("%s: max_instances is not validated against BROKER_URL", appRunnerDir)
	}
	for _, dir := range []string{ecsDir, appRunnerDir} {
		text := strings.Join(loadTF(t, filepath.Join("deploy", dir)).lines, "\n")
		if strings.Contains(text, "aws_appautoscaling_target") {
			t.Errorf("%s: auto scaling is not tied to a broker", dir)
		}
	}
}

// Only the dispatcher pods reach the example broker; the optional policy
// for the dispatcher opens its public port to all and its admin port
// (pprof) to the monitoring namespace only.
func TestNetworkPolicies(t *testing.T) {
	broker, err := decodeManifests(filepath.Join(repoRoot(t), "deploy", k8sDir, "broker"))
	if err != nil {
		t.Fatal(err)
	}
	main, err := decodeManifests(filepath.Join(repoRoot(t), "deploy", k8sDir))
	if err != nil {
		t.Fatal(err)
	}
	opt, err := decodeManifests(filepath.Join(repoRoot(t), "deploy", k8sDir, "networkpolicy"))
	if err != nil {
		t.Fatal(err)
	}
	if len(broker.Policies) != 1 || len(opt.Policies) != 1 || len(main.Policies) != 0 {
		t.Fatalf("%d broker, %d optional, %d default policies; want 1, 1 and 0 (a default one would cut scrapers elsewhere)",
			len(broker.Policies), len(opt.Policies), len(main.Policies))
	}
	dispatcher := main.Deployments[0].Spec.Template.Labels
	selects := func(sel metav1.LabelSelector, labels map[string]string) bool {
		s, err := metav1.LabelSelectorAsSelector(&sel)
		return err == nil && !s.Empty() && s.Matches(k8slabels.Set(labels))
	}
	port := func(r networkingv1.NetworkPolicyIngressRule) int {
		if len(r.Ports) != 1 || r.Ports[0].Port == nil {
			return -1
		}
		return r.Ports[0].Port.IntValue()
	}

	bp := broker.Policies[0]
	if !selects(bp.Spec.PodSelector, broker.Deployments[0].Spec.Template.Labels) || len(bp.Spec.Ingress) != 1 {
		t.Fatalf("broker policy %+v: want it to select the broker pods with one ingress rule", bp.Spec)
	}
	in := bp.Spec.Ingress[0]
	if len(in.From) != 1 || in.From[0].PodSelector == nil || in.From[0].NamespaceSelector != nil || !selects(*in.From[0].PodSelector, dispatcher) ||
		port(in) != int(broker.Services[0].Spec.Ports[0].Port) {
		t.Errorf("broker policy ingress %+v: want only the dispatcher pods, on the broker's port", in)
	}

	ap := opt.Policies[0]
	if !selects(ap.Spec.PodSelector, dispatcher) || len(ap.Spec.Ingress) != 2 {
		t.Fatalf("dispatcher policy %+v: want it to select the dispatcher pods with two rules", ap.Spec)
	}
	public, admin := ap.Spec.Ingress[0], ap.Spec.Ingress[1]
	if len(public.From) != 0 || port(public) != 3569 {
		t.Errorf("public rule %+v: want port 3569 from anywhere", public)
	}
	if len(admin.From) != 1 || admin.From[0].NamespaceSelector == nil || admin.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" || port(admin) != 9569 {
		t.Errorf("admin rule %+v: want port 9569 from the monitoring namespace only", admin)
	}
}

// checkKubernetesBrokerExample: the example broker decodes strictly, and
// the BROKER_URL suggested in deployment.yaml names its Service and port.
func checkKubernetesBrokerExample(t *testing.T) {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "deploy", k8sDir, "broker")
	objs, err := decodeManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Services) != 1 || len(objs.Deployments) != 1 {
		t.Fatalf("%s: %d Services, %d Deployments, want 1 and 1", dir, len(objs.Services), len(objs.Deployments))
	}
	suggested := regexp.MustCompile(`BROKER_URL=(redis://[^\s,]+)`).FindStringSubmatch(readFile(t, filepath.Join("deploy", k8sDir, "deployment.yaml")))
	if suggested == nil {
		t.Fatalf("%s/deployment.yaml suggests no BROKER_URL", k8sDir)
	}
	svc := objs.Services[0]
	want := fmt.Sprintf("redis://%s:%d", svc.Name, svc.Spec.Ports[0].Port)
	if suggested[1] != want {
		t.Errorf("deployment.yaml suggests BROKER_URL=%s, the example broker is %s", suggested[1], want)
	}
	if cfg, err := loadConfig(t, envSource{File: "deployment.yaml", Names: []string{"BROKER_URL"}, Values: map[string]string{"BROKER_URL": suggested[1]}}); err != nil || cfg.BrokerURL != suggested[1] {
		t.Errorf("the service rejects BROKER_URL=%s: %v", suggested[1], err)
	}
}

func TestImageRunsUnprivileged(t *testing.T) {
	df := loadDockerfile(t)
	final := df.Stages[len(df.Stages)-1]
	if !strings.HasPrefix(final.Image, "gcr.io/distroless/static") || !strings.HasSuffix(final.Image, ":nonroot") {
		t.Errorf("runtime image %s: want distroless static, nonroot tag (the binary is static)", final.Image)
	}
	users := final.all("USER")
	if len(users) != 1 || strings.Split(users[0].Args, ":")[0] != imageUser {
		t.Errorf("USER %v: want %s (numeric, so runAsNonRoot can verify it)", users, imageUser)
	}

	bin := findImageBinary(t, df)
	for _, in := range final.Instrs {
		if in.Cmd != "HEALTHCHECK" {
			continue
		}
		argv, err := healthcheckArgv(in)
		if err != nil {
			t.Fatalf("line %d: %v", in.Line, err)
		}
		if !slices.Equal(argv, []string{bin.dest, "-healthcheck"}) {
			t.Errorf("HEALTHCHECK runs %q, want [%s -healthcheck]", argv, bin.dest)
		}
	}

	c := serviceContainer(t, loadK8s(t))
	pod := loadK8s(t).Deployments[0].Spec.Template.Spec.SecurityContext
	sc := c.SecurityContext
	switch {
	case pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot:
		t.Errorf("%s: runAsNonRoot not true", k8sDir)
	case pod.RunAsUser == nil || strconv.FormatInt(*pod.RunAsUser, 10) != imageUser:
		t.Errorf("%s: runAsUser %v, want the image's %s", k8sDir, pod.RunAsUser, imageUser)
	case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: readOnlyRootFilesystem not true", k8sDir)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation not false", k8sDir)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("%s: capabilities do not drop ALL", k8sDir)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			t.Errorf("%s: no %s request", k8sDir, res)
		}
		if _, ok := c.Resources.Limits[res]; !ok {
			t.Errorf("%s: no %s limit", k8sDir, res)
		}
	}

	ecs := loadTF(t, filepath.Join("deploy", ecsDir))
	if v := ecs.only(t, "readonlyRootFilesystem"); v != "true" {
		t.Errorf("%s: readonlyRootFilesystem %s", ecsDir, v)
	}
	if u := ecs.only(t, "user"); strings.Split(u, ":")[0] != imageUser {
		t.Errorf("%s: user %q, want the image's %s", ecsDir, u, imageUser)
	}
	var cmd []string
	for _, q := range tfQuoted.FindAllStringSubmatch(strings.Join(ecs.attr("command"), " "), -1) {
		cmd = append(cmd, q[1])
	}
	if !slices.Equal(cmd, []string{"CMD", bin.dest, "-healthcheck"}) {
		t.Errorf("%s: container healthCheck command %q, want [CMD %s -healthcheck]", ecsDir, cmd, bin.dest)
	}
}

func TestDockerignoreKeepsWhatTheBuildNeeds(t *testing.T) {
	rules := parseDockerignore(readFile(t, ".dockerignore"))
	for _, r := range rules {
		if r.negate {
			t.Errorf("exception rule !%s: dockerfile_test.go prunes excluded directories and would miss what it re-includes", r.pattern)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/event_dispatcher/main.go", "pkg/config/config.go"} {
		if excluded(rules, p) {
			t.Errorf("%s is left out of the build context", p)
		}
	}
	for _, p := range []string{".git/config", "deploy/aws-ecs/main.tf", "pkg/config/config_test.go", "README.md", "pkg/event/testdata/x.json",
		"examples/consumer/listen.go", "internal/ssetest/server.go", "docs/viewer.png", "cmd/loadtest/main.go", "huge.log"} {
		if !excluded(rules, p) {
			t.Errorf("%s is in the build context", p)
		}
	}
	// Whatever else the repository holds at its root stays out until the
	// build needs it (tracked files: a developer's own untracked files are
	// theirs to ignore).
	out, err := exec.Command("git", "-C", repoRoot(t), "ls-files").Output()
	if err != nil {
		t.Skipf("git ls-files: %v", err)
	}
	roots := map[string]bool{}
	for _, f := range strings.Fields(string(out)) {
		roots[strings.SplitN(f, "/", 2)[0]] = true
	}
	for n := range roots {
		switch n {
		case "go.mod", "go.sum", "cmd", "pkg":
		default:
			if !excluded(rules, n) {
				t.Errorf("%s enters the Docker build context: list it in .dockerignore (the build needs go.mod, go.sum, cmd/ and pkg/ only)", n)
			}
		}
	}
}

func fmtPtr[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// goMinor returns the minor version of a Go version such as 1.26, 1.26.0,
// go1.26.8 or a golang:1.26-bookworm tag.
func goMinor(t *testing.T, v string) int {
	t.Helper()
	g := regexp.MustCompile(`(?:^|go|:)1\.(\d+)`).FindStringSubmatch(v)
	if g == nil {
		t.Fatalf("no Go version in %q", v)
	}
	n, _ := strconv.Atoi(g[1])
	return n
}

func TestToolchainsMeetGoMod(t *testing.T) {
	g := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(readFile(t, "go.mod"))
	if g == nil {
		t.Fatal("no go line in go.mod")
	}
	need := goMinor(t, g[1])

	df := loadDockerfile(t)
	builder := findImageBinary(t, df).build
	if got := goMinor(t, builder.Image); got < need {
		t.Errorf("Dockerfile builder %s has Go 1.%d; go.mod needs 1.%d", builder.Image, got, need)
	}

	c := loadAppRunner(t)
	for _, e := range c.Build.Env {
		if e.Name == "GO_TOOLCHAIN" {
			if got := goMinor(t, e.Value); got < need {
				t.Errorf("apprunner.yaml GO_TOOLCHAIN %s; go.mod needs 1.%d", e.Value, need)
			}
		}
	}
	script := readFile(t, "scripts", "apprunner-build.sh")
	def := regexp.MustCompile(`GO_TOOLCHAIN="\$\{GO_TOOLCHAIN:-([^}]*)\}"`).FindStringSubmatch(script)
	if def == nil || goMinor(t, def[1]) < need {
		t.Errorf("scripts/apprunner-build.sh default GO_TOOLCHAIN %v; go.mod needs 1.%d", def, need)
	}
}

func TestAppRunnerBuildMatchesDockerfile(t *testing.T) {
	c := loadAppRunner(t)
	if v, err := c.Version.Float64(); err != nil || v != 1.0 || c.Runtime != "go1" {
		t.Errorf("apprunner.yaml version %s runtime %s, want 1.0 and go1", c.Version, c.Runtime)
	}
	script := readFile(t, "scripts", "apprunner-build.sh")
	// Build variables must be ones the script reads.
	for _, e := range c.Build.Env {
		if !strings.Contains(script, "${"+e.Name+":-") {
			t.Errorf("apprunner.yaml build env %s is not read by scripts/apprunner-build.sh", e.Name)
		}
	}
	if !slices.Equal(c.Build.Commands.Build, []string{"sh scripts/apprunner-build.sh"}) {
		t.Errorf("apprunner.yaml build commands %q, want the build script", c.Build.Commands.Build)
	}
	out := regexp.MustCompile(`OUT="\$\{OUT:-([^}]*)\}"`).FindStringSubmatch(script)
	if out == nil || c.Run.Command != out[1] {
		t.Errorf("apprunner.yaml run.command %q does not run the script's output %v", c.Run.Command, out)
	}

	// The same go build as the Dockerfile's, apart from the output path.
	vars := map[string]string{"GO": "go", "VERSION": "v1.2.3", "OUT": "OUT"}
	argv := func(where, line string) []string {
		fields, err := shellFields(strings.TrimSpace(line), vars)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		for i := range fields[:max(len(fields)-1, 0)] {
			if fields[i] == "-o" {
				fields[i+1] = "OUT"
			}
		}
		return fields
	}
	var docker, scriptBuild []string
	for _, in := range findImageBinary(t, loadDockerfile(t)).build.all("RUN") {
		if strings.Contains(in.Args, "go build") {
			docker = argv("Dockerfile", in.Args)
		}
	}
	for _, line := range strings.Split(script, "\n") {
		if strings.Contains(line, `"$GO" build`) {
			scriptBuild = argv("scripts/apprunner-build.sh", line)
		}
	}
	if docker == nil || !slices.Equal(docker, scriptBuild) {
		t.Errorf("go build differs:\nDockerfile: %q\nscript:     %q", docker, scriptBuild)
	}
}

func TestAppRunnerBuildScriptBuilds(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	out := filepath.Join(t.TempDir(), "event_dispatcher")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "scripts/apprunner-build.sh")
	cmd.Dir = repoRoot(t)
	// The installed toolchain, so nothing is downloaded: the script's other
	// branch (a Go older than 1.21 fetching the toolchain) needs the network.
	cmd.Env = append(os.Environ(), "GO_TOOLCHAIN="+strings.TrimSpace(string(goVersion)), "VERSION=script-test", "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/apprunner-build.sh: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "script-test") {
		t.Error("the script's binary does not carry the VERSION it was given")
	}
}

func TestTerraformFormatted(t *testing.T) {
	tf, err := exec.LookPath("terraform")
	if err != nil {
		testenv.Skip(t, "no terraform on PATH: deploy/ formatting unchecked")
	}
	cmd := exec.Command(tf, "fmt", "-check", "-recursive", "-diff", filepath.Join(repoRoot(t), "deploy"))
	cmd.Env = append(os.Environ(), "CHECKPOINT_DISABLE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("terraform fmt -check -recursive deploy: %v\n%s", err, out)
	}
}

// secretNames are the service variables its config marks as secrets.
func secretNames(t *testing.T) []string {
	t.Helper()
	var out []string
	typ := reflect.TypeFor[config.Config]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.Tag.Get("secret") == "true" {
			out = append(out, f.Tag.Get("envconfig"))
		}
	}
	if len(out) == 0 {
		t.Fatal("config.Config marks no variable secret: the tag changed and this test no longer sees them")
	}
	slices.Sort(out)
	return out
}

// brokerURL is a secret only when it carries credentials (user:password@,
// a NATS token@): without, as for the Valkey group Terraform creates (no
// AUTH token), it may be plain.
const brokerURL = "BROKER_URL"

// noCredentials is the modules' local.no_credentials: no userinfo.
var noCredentials = regexp.MustCompile(`^[^@]*$`)

func TestBrokerURLCredentialsCheck(t *testing.T) {
	for url, plain := range map[string]bool{
		"rediss://master.x.cache.amazonaws.com:6379": true,
		"redis://cache:6379/0":                       true,
		"nats://n1:4222,nats://n2:4222":              true,
		"redis://app:pw@cache:6379":                  false,
		"redis://:pw@cache:6379":                     false,
		"nats://token@n1:4222":                       false,
		"nats://n1:4222,nats://u:p@n2:4222":          false,
	} {
		if noCredentials.MatchString(url) != plain {
			t.Errorf("%s: plain %v, want %v", url, !plain, plain)
		}
	}
	for _, dir := range []string{ecsDir, appRunnerDir} {
		m := loadTF(t, filepath.Join("deploy", dir))
		if got := m.only(t, "no_credentials"); got != noCredentials.String() {
			t.Errorf("%s: no_credentials = %q, want %q", dir, got, noCredentials)
		}
		text := strings.Join(m.lines, "\n")
		want := `condition     = alltrue([for k, v in var.environment : !contains(local.secret_environment, k) || (k == "BROKER_URL" && can(regex(local.no_credentials, v)))])`
		if !strings.Contains(text, want) {
			t.Errorf("%s: var.environment does not refuse a BROKER_URL with credentials", dir)
		}
	}
	ecs := strings.Join(loadTF(t, filepath.Join("deploy", ecsDir)).lines, "\n")
	if !strings.Contains(ecs, `condition     = can(regex(local.no_credentials, var.broker_url))`) {
		t.Errorf("%s: var.broker_url, written into the task definition, does not refuse credentials", ecsDir)
	}
}

// Secrets reach the service only from the platform's secret store: never a
// literal in a deployment file, and optional everywhere, so that the
// defaults keep the service open.
func TestSecretsComeFromTheSecretStore(t *testing.T) {
	secrets := secretNames(t)
	if !slices.Contains(secrets, brokerURL) {
		t.Errorf("config.Config does not mark %s secret", brokerURL)
	}
	for _, src := range allEnvSources(t) {
		for _, name := range src.Names {
			v, literal := src.Values[name]
			if slices.Contains(secrets, name) && literal && !(name == brokerURL && noCredentials.MatchString(v)) {
				t.Errorf("%s sets the secret %s as a literal", src.File, name)
			}
		}
	}
	for _, src := range []envSource{dockerfileEnv(t, loadDockerfile(t)), loadTF(t, filepath.Join("deploy", ecsDir)).envSource(), loadTF(t, filepath.Join("deploy", appRunnerDir)).envSource()} {
		for _, name := range src.Names {
			// A module's BROKER_URL is checked for credentials (TestBrokerURLCredentialsCheck).
			if slices.Contains(secrets, name) && !(name == brokerURL && src.File != "Dockerfile") {
				t.Errorf("%s sets the secret %s in its environment; it belongs in the secret store", src.File, name)
			}
		}
	}
	for _, s := range loadAppRunner(t).Run.Secrets {
		if !slices.Contains(secrets, s.Name) || !strings.HasPrefix(s.ValueFrom, "arn:") {
			t.Errorf("apprunner.yaml secret %s from %q: want a secret variable from an ARN", s.Name, s.ValueFrom)
		}
	}
	// Its comment is all a source-code deployment has to go by: it names
	// every secret.
	for _, name := range secrets {
		if !strings.Contains(readFile(t, "apprunner.yaml"), name) {
			t.Errorf("apprunner.yaml does not say that %s comes from the secret store", name)
		}
	}

	for dir, wiring := range map[string]string{
		ecsDir:       "[for k in sort(keys(var.secrets)) : { name = k, valueFrom = var.secrets[k] }]",
		appRunnerDir: "var.secrets",
	} {
		m := loadTF(t, filepath.Join("deploy", dir))
		got := m.list(t, "secret_environment")
		slices.Sort(got)
		if !slices.Equal(got, secrets) {
			t.Errorf("%s: secret_environment = %v, want the service's secrets %v", dir, got, secrets)
		}
		key := map[string]string{ecsDir: "secrets", appRunnerDir: "runtime_environment_secrets"}[dir]
		if raws := m.attr(key); !slices.Contains(raws, wiring) {
			t.Errorf("%s: %s = %v, want %s", dir, key, raws, wiring)
		}
	}

	c := serviceContainer(t, loadK8s(t))
	for _, name := range secrets {
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
		if i < 0 {
			t.Errorf("%s: no %s from a Secret", k8sDir, name)
			continue
		}
		ref := c.Env[i].ValueFrom
		if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Optional == nil || !*ref.SecretKeyRef.Optional {
			t.Errorf("%s: %s must come from an optional secretKeyRef", k8sDir, name)
		}
	}
}

// Liveness must not fail under overload or while draining, or the
// orchestrator restarts a replica and drops every listener at once: only
// /livez answers 200 through both. Load balancers route on readiness.
func TestProbesSplitLivenessFromReadiness(t *testing.T) {
	paths := healthPaths(t)
	want := map[string]string{
		k8sDir + " liveness":  "/livez",
		k8sDir + " readiness": "/readyz",
		ecsDir:                "/health",
		appRunnerDir:          "/health",
	}
	for where, p := range want {
		if paths[where] != p {
			t.Errorf("%s probes %q, want %q", where, paths[where], p)
		}
	}
}
