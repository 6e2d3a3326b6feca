package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"event-dispatcher/pkg/config"
)

// This file reads the deployment files into plain values for the checks in
// dockerfile_test.go and drift_test.go.

// repoRoot is the module root: the tests run in deploy/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found above deploy/: %v", err)
	}
	return root
}

func readFile(t *testing.T, parts ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{repoRoot(t)}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// configDefaults maps every variable the service reads to its default, from
// the struct tags of config.Config (the single source of both).
func configDefaults() map[string]string {
	out := map[string]string{}
	typ := reflect.TypeFor[config.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if name := f.Tag.Get("envconfig"); name != "" && f.Tag.Get("ignored") != "true" {
			out[name] = f.Tag.Get("default")
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// envSource is one place that sets service variables. Values holds the
// literal ones; names set from an expression (Terraform) are in Names only.
type envSource struct {
	File   string
	Names  []string
	Values map[string]string
}

// loadConfig runs the service's own config loading on exactly the variables
// of src (every other service variable unset), so values are validated and
// defaults applied by the code itself.
func loadConfig(t *testing.T, src envSource) (config.Config, error) {
	t.Helper()
	for name := range configDefaults() {
		t.Setenv(name, "") // restores the caller's value at cleanup
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range src.Values {
		t.Setenv(k, v)
	}
	return config.Load(nil, io.Discard)
}

// --- Dockerfile ------------------------------------------------------------

type dockerInstr struct {
	Line int
	Cmd  string // upper case
	Args string // continuation lines joined
}

type dockerStage struct {
	Image, Name string
	Instrs      []dockerInstr
}

type dockerfile struct {
	GlobalArgs map[string]string // ARGs before the first FROM, with defaults
	Stages     []dockerStage
}

func parseDockerfile(text string) (dockerfile, error) {
	df := dockerfile{GlobalArgs: map[string]string{}}
	var cur strings.Builder
	start := 0
	var instrs []dockerInstr
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue // comments may also sit between continuation lines
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		instrs = append(instrs, dockerInstr{Line: start, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)})
		cur.Reset()
	}
	for _, in := range instrs {
		switch {
		case in.Cmd == "FROM":
			fields, err := shellFields(in.Args, df.GlobalArgs)
			if err != nil {
				return df, fmt.Errorf("line %d: %w", in.Line, err)
			}
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			st := dockerStage{Image: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.Name = fields[2]
			}
			df.Stages = append(df.Stages, st)
		case len(df.Stages) == 0:
			if in.Cmd != "ARG" {
				return df, fmt.Errorf("line %d: %s before FROM", in.Line, in.Cmd)
			}
			name, def, _ := strings.Cut(in.Args, "=")
			df.GlobalArgs[name] = def
		default:
			st := &df.Stages[len(df.Stages)-1]
			st.Instrs = append(st.Instrs, in)
		}
	}
	if len(df.Stages) == 0 {
		return df, fmt.Errorf("no FROM")
	}
	return df, nil
}

func (df dockerfile) stage(name string) (dockerStage, bool) {
	for _, st := range df.Stages {
		if st.Name == name {
			return st, true
		}
	}
	return dockerStage{}, false
}

func (st dockerStage) all(cmd string) []dockerInstr {
	var out []dockerInstr
	for _, in := range st.Instrs {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// keyValues reads ENV or ARG arguments: NAME=value pairs (shell quoting).
func keyValues(args string, vars map[string]string) (map[string]string, error) {
	fields, err := shellFields(args, vars)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out, nil
}

// execForm decodes a JSON array argument (CMD, ENTRYPOINT, HEALTHCHECK CMD).
func execForm(s string) ([]string, error) {
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil {
		return nil, fmt.Errorf("%q is not the exec (JSON array) form: %w", s, err)
	}
	return argv, nil
}

// healthcheckArgv returns the HEALTHCHECK's command, which must use the exec
// form since the runtime image has no shell.
func healthcheckArgv(in dockerInstr) ([]string, error) {
	rest := in.Args
	for strings.HasPrefix(rest, "--") {
		_, rest, _ = strings.Cut(rest, " ")
		rest = strings.TrimSpace(rest)
	}
	cmd, ok := strings.CutPrefix(rest, "CMD ")
	if !ok {
		return nil, fmt.Errorf("HEALTHCHECK %q has no CMD", in.Args)
	}
	return execForm(strings.TrimSpace(cmd))
}

// shellFields splits a simple shell command line into words: quotes,
// backslash escapes and $VAR/${VAR} from vars. Anything else a shell would
// interpret (pipes, lists, redirections, substitutions) is an error, so a
// command the tests cannot run exactly as written is reported, not guessed.
func shellFields(s string, vars map[string]string) ([]string, error) {
	var fields []string
	var cur strings.Builder
	inWord := false
	expand := func(i int) (int, error) { // s[i] == '$'
		if i+1 < len(s) && s[i+1] == '{' {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return 0, fmt.Errorf("unclosed ${ in %q", s)
			}
			name := s[i+2 : i+end]
			if strings.ContainsAny(name, ":-+?#%/") {
				return 0, fmt.Errorf("parameter operator in ${%s} is not supported", name)
			}
			cur.WriteString(vars[name])
			return i + end + 1, nil
		}
		j := i + 1
		for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
			j++
		}
		if j == i+1 {
			return 0, fmt.Errorf("unsupported $ in %q", s)
		}
		cur.WriteString(vars[s[i+1:j]])
		return j, nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				fields = append(fields, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unclosed ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			inWord, i = true, i+end+2
		case c == '"':
			inWord = true
			i++
			for {
				if i >= len(s) {
					return nil, fmt.Errorf(`unclosed " in %q`, s)
				}
				if s[i] == '"' {
					i++
					break
				}
				switch s[i] {
				case '\\':
					if i+1 < len(s) && strings.IndexByte("$`\"\\", s[i+1]) >= 0 {
						cur.WriteByte(s[i+1])
						i += 2
						continue
					}
					cur.WriteByte('\\')
					i++
				case '$':
					var err error
					if i, err = expand(i); err != nil {
						return nil, err
					}
				case '`':
					return nil, fmt.Errorf("command substitution in %q is not supported", s)
				default:
					cur.WriteByte(s[i])
					i++
				}
			}
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			inWord, i = true, i+2
		case c == '$':
			var err error
			inWord = true
			if i, err = expand(i); err != nil {
				return nil, err
			}
		case strings.IndexByte(";&|<>()`", c) >= 0:
			return nil, fmt.Errorf("shell operator %q in %q is not supported", c, s)
		default:
			cur.WriteByte(c)
			inWord, i = true, i+1
		}
	}
	if inWord {
		fields = append(fields, cur.String())
	}
	return fields, nil
}

// splitAssignments separates leading NAME=value words (a command's
// environment) from the command itself.
func splitAssignments(fields []string) (env map[string]string, argv []string) {
	env = map[string]string{}
	assign := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	for len(fields) > 0 && assign.MatchString(fields[0]) {
		k, v, _ := strings.Cut(fields[0], "=")
		env[k] = v
		fields = fields[1:]
	}
	return env, fields
}

// --- .dockerignore -----------------------------------------------------------

type ignoreRule struct {
	pattern string
	negate  bool
}

func parseDockerignore(text string) []ignoreRule {
	var rules []ignoreRule
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if p, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, p
		}
		r.pattern = strings.TrimPrefix(path.Clean("/"+line), "/")
		rules = append(rules, r)
	}
	return rules
}

// excluded reports whether the context path rel (slash-separated) is left
// out of the build context: as with Docker, a pattern matches the path or
// one of its parent directories, and the last matching rule wins.
func excluded(rules []ignoreRule, rel string) bool {
	out := false
	for _, r := range rules {
		segs := strings.Split(rel, "/")
		for n := 1; n <= len(segs); n++ {
			if matchSegments(strings.Split(r.pattern, "/"), segs[:n]) {
				out = !r.negate
				break
			}
		}
	}
	return out
}

// matchSegments matches path segments against pattern segments, where **
// stands for any number of segments and the others use path.Match.
func matchSegments(pat, segs []string) bool {
	if len(pat) == 0 {
		return len(segs) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(segs); i++ {
			if matchSegments(pat[1:], segs[i:]) {
				return true
			}
		}
		return false
	}
	if len(segs) == 0 {
		return false
	}
	ok, err := path.Match(pat[0], segs[0])
	return err == nil && ok && matchSegments(pat[1:], segs[1:])
}

// --- apprunner.yaml ----------------------------------------------------------

type appRunnerEnv struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// appRunnerConfig models the App Runner configuration file reference
// (version 1.0); decoding is strict, so a misspelled key fails.
type appRunnerConfig struct {
	Version json.Number `json:"version"`
	Runtime string      `json:"runtime"`
	Build   struct {
		Commands struct {
			PreBuild  []string `json:"pre-build"`
			Build     []string `json:"build"`
			PostBuild []string `json:"post-build"`
		} `json:"commands"`
		Env []appRunnerEnv `json:"env"`
	} `json:"build"`
	Run struct {
		RuntimeVersion string   `json:"runtime-version"`
		PreRun         []string `json:"pre-run"`
		Command        string   `json:"command"`
		Network        struct {
			Port int    `json:"port"`
			Env  string `json:"env"`
		} `json:"network"`
		Env     []appRunnerEnv `json:"env"`
		Secrets []struct {
			Name      string `json:"name"`
			ValueFrom string `json:"value-from"`
		} `json:"secrets"`
	} `json:"run"`
}

func loadAppRunner(t *testing.T) appRunnerConfig {
	t.Helper()
	var c appRunnerConfig
	if err := yaml.UnmarshalStrict([]byte(readFile(t, "apprunner.yaml")), &c); err != nil {
		t.Fatalf("apprunner.yaml: %v", err)
	}
	return c
}

func (c appRunnerConfig) envSource() envSource {
	src := envSource{File: "apprunner.yaml", Values: map[string]string{}}
	for _, e := range c.Run.Env {
		src.Names = append(src.Names, e.Name)
		src.Values[e.Name] = e.Value
	}
	for _, s := range c.Run.Secrets {
		src.Names = append(src.Names, s.Name)
	}
	if c.Run.Network.Env != "" {
		// App Runner puts network.port into this variable.
		src.Names = append(src.Names, c.Run.Network.Env)
		src.Values[c.Run.Network.Env] = strconv.Itoa(c.Run.Network.Port)
	}
	return src
}

// --- Terraform -----------------------------------------------------------------

// tfModule is the text of one Terraform root module, read with a few line
// patterns: the files keep the values checked here as one-line assignments
// (in locals where a value is shared).
type tfModule struct {
	Dir   string
	lines []string // comment lines removed
}

func loadTF(t *testing.T, dir string) tfModule {
	t.Helper()
	m := tfModule{Dir: dir}
	files, err := filepath.Glob(filepath.Join(repoRoot(t), dir, "*.tf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no .tf files in %s (%v)", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if trimmed := strings.TrimSpace(line); !strings.HasPrefix(trimmed, "#") && !strings.HasPrefix(trimmed, "//") {
				m.lines = append(m.lines, line)
			}
		}
	}
	return m
}

var tfAssign = regexp.MustCompile(`^\s*"?([A-Za-z_][A-Za-z0-9_-]*)"?\s*=\s*(.*?)\s*$`)

// attr returns the raw right-hand side of every one-line assignment to name.
func (m tfModule) attr(name string) []string {
	var out []string
	for _, line := range m.lines {
		if g := tfAssign.FindStringSubmatch(line); g != nil && g[1] == name {
			out = append(out, g[2])
		}
	}
	return out
}

// value resolves a raw right-hand side to a literal: strings, numbers and
// booleans as written, local.X through X's assignment, tostring() around
// either. ok is false for anything computed.
func (m tfModule) value(raw string) (string, bool) {
	if inner, found := strings.CutPrefix(raw, "tostring("); found {
		return m.value(strings.TrimSuffix(inner, ")"))
	}
	if name, found := strings.CutPrefix(raw, "local."); found {
		return m.resolved(name)
	}
	if s, err := strconv.Unquote(raw); err == nil && strings.HasPrefix(raw, `"`) {
		return s, !strings.Contains(s, "${")
	}
	if _, err := strconv.ParseFloat(raw, 64); err == nil || raw == "true" || raw == "false" {
		return raw, true
	}
	return "", false
}

// resolved is the one literal that every assignment to name comes to; a
// local and the argument of the same name that uses it count as one.
func (m tfModule) resolved(name string) (string, bool) {
	var out string
	found := false
	for _, raw := range m.attr(name) {
		if raw == "local."+name {
			continue
		}
		v, ok := m.value(raw)
		if !ok || (found && v != out) {
			return "", false
		}
		out, found = v, true
	}
	return out, found
}

// only returns the literal value assigned to name.
func (m tfModule) only(t *testing.T, name string) string {
	t.Helper()
	v, ok := m.resolved(name)
	if !ok {
		t.Fatalf("%s: %s = %v: want assignments that all come to one literal (or a local set to one)", m.Dir, name, m.attr(name))
	}
	return v
}

func (m tfModule) seconds(t *testing.T, name string) time.Duration {
	t.Helper()
	n, err := strconv.Atoi(m.only(t, name))
	if err != nil {
		t.Fatalf("%s: %s: %v", m.Dir, name, err)
	}
	return time.Duration(n) * time.Second
}

var tfEnvKey = regexp.MustCompile(`^\s*([A-Z][A-Z0-9_]*)\s*=\s*(.*?)\s*$`)

// envSource collects the environment maps: in these modules, and only
// there, map keys are upper-case variable names.
func (m tfModule) envSource() envSource {
	src := envSource{File: m.Dir, Values: map[string]string{}}
	for _, line := range m.lines {
		if g := tfEnvKey.FindStringSubmatch(line); g != nil {
			src.Names = append(src.Names, g[1])
			if v, ok := m.value(g[2]); ok {
				src.Values[g[1]] = v
			}
		}
	}
	return src
}

var tfQuoted = regexp.MustCompile(`"([^"]*)"`)

// list returns the quoted strings of a (possibly multi-line) list assigned
// to name.
func (m tfModule) list(t *testing.T, name string) []string {
	t.Helper()
	re := regexp.MustCompile(`(?s)\b` + regexp.QuoteMeta(name) + `\s*=\s*\[(.*?)\]`)
	g := re.FindStringSubmatch(strings.Join(m.lines, "\n"))
	if g == nil {
		t.Fatalf("%s: no list %s", m.Dir, name)
	}
	var out []string
	for _, q := range tfQuoted.FindAllStringSubmatch(g[1], -1) {
		out = append(out, q[1])
	}
	return out
}

// --- Kubernetes ----------------------------------------------------------------

type k8sObjects struct {
	Deployments []appsv1.Deployment
	Services    []corev1.Service
	PDBs        []policyv1.PodDisruptionBudget
	Policies    []networkingv1.NetworkPolicy
}

// decodeManifests decodes every document of the YAML files in dir strictly
// into the Kubernetes API types: an unknown or misspelled field, or a kind
// the checks do not know, is an error.
func decodeManifests(dir string) (k8sObjects, error) {
	var objs k8sObjects
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return objs, err
	}
	if len(files) == 0 {
		return objs, fmt.Errorf("no manifests in %s", dir)
	}
	sep := regexp.MustCompile(`(?m)^---\s*$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return objs, err
		}
		for i, doc := range sep.Split(string(b), -1) {
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				return objs, fmt.Errorf("%s document %d: %w", f, i, err)
			}
			if meta.Kind == "" {
				if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")) == "" {
					continue // comments only
				}
				return objs, fmt.Errorf("%s document %d: no kind", f, i)
			}
			var target any
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 Deployment":
				objs.Deployments = append(objs.Deployments, appsv1.Deployment{})
				target = &objs.Deployments[len(objs.Deployments)-1]
			case "v1 Service":
				objs.Services = append(objs.Services, corev1.Service{})
				target = &objs.Services[len(objs.Services)-1]
			case "policy/v1 PodDisruptionBudget":
				objs.PDBs = append(objs.PDBs, policyv1.PodDisruptionBudget{})
				target = &objs.PDBs[len(objs.PDBs)-1]
			case "networking.k8s.io/v1 NetworkPolicy":
				objs.Policies = append(objs.Policies, networkingv1.NetworkPolicy{})
				target = &objs.Policies[len(objs.Policies)-1]
			default:
				return objs, fmt.Errorf("%s document %d: %s %s is not checked by these tests", f, i, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
				return objs, fmt.Errorf("%s document %d: %w", f, i, err)
			}
		}
	}
	return objs, nil
}

func containerEnv(c corev1.Container, file string) envSource {
	src := envSource{File: file + " container " + c.Name, Values: map[string]string{}}
	for _, e := range c.Env {
		src.Names = append(src.Names, e.Name)
		if e.ValueFrom == nil {
			src.Values[e.Name] = e.Value
		}
	}
	return src
}
