package deploy

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// No Docker engine is needed: this test runs the builder stage's RUN
// commands itself, on a copy of exactly the files .dockerignore lets into
// the build context, then checks and runs the binary the way the runtime
// stage does (ENTRYPOINT, HEALTHCHECK). What it cannot check is the base
// images themselves.

// imageBinary describes the binary the runtime stage copies from the
// builder: where the builder writes it and where the image has it.
type imageBinary struct {
	build      dockerStage
	from, dest string
}

func findImageBinary(t *testing.T, df dockerfile) imageBinary {
	t.Helper()
	final := df.Stages[len(df.Stages)-1]
	for _, in := range final.all("COPY") {
		fields, err := shellFields(in.Args, nil)
		if err != nil {
			t.Fatalf("line %d: %v", in.Line, err)
		}
		stage, ok := strings.CutPrefix(fields[0], "--from=")
		if !ok || len(fields) != 3 {
			continue
		}
		build, found := df.stage(stage)
		if !found {
			t.Fatalf("line %d: no stage %q", in.Line, stage)
		}
		return imageBinary{build: build, from: fields[1], dest: fields[2]}
	}
	t.Fatal("the runtime stage copies no binary from a builder stage")
	return imageBinary{}
}

// copyContext copies the files of root that .dockerignore lets into the
// build context to dst.
func copyContext(t *testing.T, root, dst string) {
	t.Helper()
	rules := parseDockerignore(readFile(t, ".dockerignore"))
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if excluded(rules, filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir // no exception rules re-include below (checked in drift_test.go)
			}
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// buildEnv is the environment of a builder RUN: this machine's, without the
// Go settings the golang image does not have, plus the stage's ENV and the
// command's own assignments. GOTOOLCHAIN=local is what the golang image sets.
func buildEnv(stageEnv, cmdEnv map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOFLAGS", "CGO_ENABLED", "GOOS", "GOARCH", "GOTOOLCHAIN", "GOWORK":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GOTOOLCHAIN=local")
	for _, m := range []map[string]string{stageEnv, cmdEnv} {
		for _, k := range sortedKeys(m) {
			env = append(env, k+"="+m[k])
		}
	}
	return env
}

func TestDockerfileBuildsStaticStampedBinary(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is a linux one; the ELF checks need a linux build")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	df, err := parseDockerfile(readFile(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	bin := findImageBinary(t, df)
	ctxDir, out := t.TempDir(), t.TempDir()
	copyContext(t, repoRoot(t), ctxDir)
	built := filepath.Join(out, "event_dispatcher")
	version := fmt.Sprintf("v0.0.0-dockerfile-test-%d", time.Now().UnixNano())

	// Run every RUN of the builder stage in order, in the context copy (the
	// stage copies the whole context into its WORKDIR).
	vars, stageEnv := map[string]string{}, map[string]string{}
	builds := 0
	for _, in := range bin.build.Instrs {
		switch in.Cmd {
		case "ARG":
			name, def, _ := strings.Cut(in.Args, "=")
			vars[name] = def
			if name == "VERSION" {
				vars[name] = version // as --build-arg VERSION=... does
			}
		case "ENV":
			kv, err := keyValues(in.Args, vars)
			if err != nil {
				t.Fatalf("line %d: %v", in.Line, err)
			}
			for k, v := range kv {
				stageEnv[k], vars[k] = v, v
			}
		case "RUN":
			fields, err := shellFields(in.Args, vars)
			if err != nil {
				t.Fatalf("Dockerfile line %d: this test runs builder commands itself; keep each RUN one plain command: %v", in.Line, err)
			}
			cmdEnv, argv := splitAssignments(fields)
			if len(argv) < 2 || argv[0] != "go" {
				t.Fatalf("Dockerfile line %d: %q is not a go command; this test runs only those", in.Line, in.Args)
			}
			if argv[1] == "build" {
				builds++
				replaced := false
				for i := range argv[:len(argv)-1] {
					if argv[i] == "-o" && argv[i+1] == bin.from {
						argv[i+1], replaced = built, true
					}
				}
				if !replaced {
					t.Fatalf("Dockerfile line %d: go build does not write %s, the file the runtime stage copies", in.Line, bin.from)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			cmd.Dir = ctxDir
			cmd.Env = buildEnv(stageEnv, cmdEnv)
			output, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("Dockerfile line %d: %s: %v\n%s", in.Line, strings.Join(argv, " "), err, output)
			}
		}
	}
	if builds != 1 {
		t.Fatalf("builder stage has %d go build commands, want 1", builds)
	}

	t.Run("static", func(t *testing.T) { checkStatic(t, built) })
	t.Run("build settings", func(t *testing.T) { checkBuildInfo(t, built, version, ctxDir) })
	t.Run("runs as the image runs it", func(t *testing.T) { checkRunsLikeImage(t, df, bin, built, version) })
}

// checkStatic: distroless/static has no dynamic loader and no libc, so the
// binary must have no interpreter and no dynamic section.
func checkStatic(t *testing.T, binPath string) {
	f, err := elf.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("program header %v: the binary is dynamically linked", p.Type)
		}
	}
	for _, name := range []string{".interp", ".dynamic"} {
		if f.Section(name) != nil {
			t.Errorf("section %s present: the binary is dynamically linked", name)
		}
	}
}

// checkBuildInfo checks the settings the go command recorded in the binary
// and the effects of the link flags.
func checkBuildInfo(t *testing.T, binPath, version, ctxDir string) {
	out, err := exec.Command("go", "version", "-m", binPath).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.SplitN(strings.TrimSpace(line), "\t", 2)
		if len(fields) == 2 && fields[0] == "build" {
			k, v, _ := strings.Cut(fields[1], "=")
			settings[k] = v
		}
	}
	for k, want := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true"} {
		if settings[k] != want {
			t.Errorf("build setting %s = %q, want %q", k, settings[k], want)
		}
	}
	// With -trimpath the go command leaves -ldflags out of the build info:
	// check their effects instead. -X: the value is in the binary (and the
	// binary logs it, see checkRunsLikeImage); -s -w: no symbol table, no
	// DWARF.
	f, err := elf.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(name) != nil {
			t.Errorf("section %s present: the binary is not stripped (-s -w)", name)
		}
	}
	b, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(version)) {
		t.Errorf("the version string %q is not in the binary: -X did not stamp it", version)
	}
	if bytes.Contains(b, []byte(ctxDir)) {
		t.Errorf("the build directory %s is in the binary despite -trimpath", ctxDir)
	}
}

// checkRunsLikeImage starts the binary with the image's ENTRYPOINT, probes it
// with the image's HEALTHCHECK command, stops it as a container runtime does
// (SIGTERM), and probes again.
func checkRunsLikeImage(t *testing.T, df dockerfile, bin imageBinary, binPath, version string) {
	final := df.Stages[len(df.Stages)-1]
	mapArgv := func(argv []string) []string {
		if len(argv) == 0 || argv[0] != bin.dest {
			t.Fatalf("command %q does not run the image's binary %s", argv, bin.dest)
		}
		return append([]string{binPath}, argv[1:]...)
	}
	var entry, probe []string
	for _, in := range final.Instrs {
		var err error
		switch in.Cmd {
		case "ENTRYPOINT":
			entry, err = execForm(in.Args)
		case "HEALTHCHECK":
			probe, err = healthcheckArgv(in)
		}
		if err != nil {
			t.Fatalf("line %d: %v", in.Line, err)
		}
	}
	entry, probe = mapArgv(entry), mapArgv(probe)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// PORT=0, ADMIN_PORT=0: free ports; the image's PORT is checked in
	// drift_test.go.
	srv := exec.CommandContext(ctx, entry[0], entry[1:]...)
	srv.Env = []string{"PORT=0", "ADMIN_PORT=0", "LOG_FORMAT=json"}
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	srv.Stderr = &stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := bufio.NewScanner(stdout)
	type logLine struct {
		Message string `json:"message"`
		Addr    string `json:"addr"`
		Version string `json:"version"`
	}
	var started logLine
	for started.Addr == "" && lines.Scan() {
		var l logLine
		if json.Unmarshal(lines.Bytes(), &l) == nil && l.Message == "event dispatcher listening" {
			started = l
		}
	}
	go func() {
		_, _ = io.Copy(io.Discard, stdout) // keep the log flowing until exit
		exited <- srv.Wait()
	}()
	if started.Addr == "" {
		_ = srv.Process.Kill()
		t.Fatalf("no listening log line; stderr:\n%s", stderr.String())
	}
	if started.Version != version {
		t.Errorf("the binary logs version %q, want the stamped %q", started.Version, version)
	}
	_, port, err := net.SplitHostPort(started.Addr)
	if err != nil {
		t.Fatal(err)
	}

	runProbe := func() (string, error) {
		cmd := exec.CommandContext(ctx, probe[0], probe[1:]...)
		cmd.Env = []string{"PORT=" + port}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := runProbe(); err != nil || !strings.HasPrefix(out, "healthy: ") {
		t.Errorf("HEALTHCHECK against the running binary: %v\n%s", err, out)
	}

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGTERM the binary exited with %v, want 0; stderr:\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		_ = srv.Process.Kill()
		t.Fatal("the binary did not exit after SIGTERM")
	}

	out, err := runProbe()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("HEALTHCHECK with the server gone: %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(out, "/health") {
		t.Errorf("the failing probe does not say what it probed: %q", out)
	}
}
