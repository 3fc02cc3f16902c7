//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/artifacts"
)

// The S3 tests run pipe (the test binary as the pipe command, a real subprocess) against a
// real S3-compatible server: SeaweedFS, built by `make s3-server` into bin/weed and started
// per test by scripts/s3-local on 127.0.0.1 with a fresh state folder, a generated key and
// a bucket. They look at the bucket from outside too, through the server's filer (its own
// HTTP API, not S3), to check what pipe left there.

// s3TinyDAG is a small AHL DAG (the remote script test's): 9 instances in a few seconds.
const s3TinyDAG = `name: tiny
seed: 7
vars: {T: 3, C: 3, M: 4}
stages:
  ingest:   {kind: ingest, with: {format: embedded, protocol: hard, seen_class: sandal, anomalies: "${M}"}}
  features: {kind: features, needs: [ingest], with: {backbone: convnet, size: 16, channels: [4, 8], epochs: 1, steps: 2, batch: 8}}
  augment:  {kind: augment, needs: [ingest, features]}
  clusters: {kind: kmeans, needs: [ingest, features], with: {k: "${C}", restarts: 2}}
  tasks:    {kind: hadg, needs: [ingest, clusters, augment], with: {T: "${T}"}}
  train:    {kind: train, needs: [ingest, features, augment, tasks], with: {method: ahl, head: devnet, epochs: 2, inner_steps: 1, query_steps: 1, batch_size: 8}}
  score:    {kind: score, needs: [ingest, features, train]}
  evaluate: {kind: evaluate, needs: [score]}
  report:   {kind: report, needs: [evaluate, train], gather: true}
`

// s3Server is one running SeaweedFS server with its bucket.
type s3Server struct {
	url    string   // PIPE_S3_URL: the --remote URL of the bucket
	filer  string   // the filer's base URL; the bucket is the folder /buckets/pipe/
	env    []string // AWS_ACCESS_KEY_ID=..., AWS_SECRET_ACCESS_KEY=..., AWS_REGION=...
	secret string
}

// repoRoot is the repository root (this package is cmd/pipe).
func repoRoot(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// startS3 starts a server owned by this test (stopped and removed at its end). A missing
// bin/weed fails the test with what to run, unless PIPE_SKIP_S3=1 asks to skip.
func startS3(t *testing.T) *s3Server {
	t.Helper()
	root := repoRoot(t)
	weed := filepath.Join(root, "bin", "weed")
	if _, err := os.Stat(weed); err != nil {
		if os.Getenv("PIPE_SKIP_S3") == "1" {
			t.Skipf("PIPE_SKIP_S3=1 and %s is missing: S3 test skipped", weed)
		}
		t.Fatalf("%s is missing: run `make s3-server` first (builds SeaweedFS from its Go module, "+
			"once), or set PIPE_SKIP_S3=1 to skip the S3 tests", weed)
	}
	script := filepath.Join(root, "scripts", "s3-local")
	state := filepath.Join(t.TempDir(), "s3")
	env := append(os.Environ(), "S3_LOCAL_DIR="+state, "WEED="+weed)
	up := exec.Command(script, "up")
	up.Env = env
	var stderr bytes.Buffer
	up.Stderr = &stderr
	out, err := up.Output()
	if err != nil {
		t.Fatalf("scripts/s3-local up: %v\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		down := exec.Command(script, "down")
		down.Env = env
		if out, err := down.CombinedOutput(); err != nil {
			t.Errorf("scripts/s3-local down: %v\n%s", err, out)
		}
	})
	s := &s3Server{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if !ok {
			t.Fatalf("scripts/s3-local up printed %q, want export K=V lines", sc.Text())
		}
		v = strings.Trim(v, "'")
		switch k {
		case "PIPE_S3_URL":
			s.url = v
		case "PIPE_S3_FILER":
			s.filer = v
		case "AWS_SECRET_ACCESS_KEY":
			s.secret = v
			s.env = append(s.env, k+"="+v)
		default:
			s.env = append(s.env, k+"="+v)
		}
	}
	if s.url == "" || s.filer == "" || s.secret == "" || len(s.env) != 3 {
		t.Fatalf("scripts/s3-local up printed an incomplete environment:\n%s", out)
	}
	return s
}

// prefixed returns the bucket URL with objects under prefix p.
func (s *s3Server) prefixed(p string) string { return s.url + "&prefix=" + p }

// pipeResult is one pipe command's outcome.
type pipeResult struct {
	stdout, stderr string
	code           int
}

// pipeEnv is the environment of pipe commands: the caller's, less any AWS setting, plus the
// server's credentials; the SDK reads no shared files (~/.aws of the person running the
// tests) and asks no instance metadata service.
func (s *s3Server) pipeEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "PIPE_REMOTE=") {
			env = append(env, kv)
		}
	}
	env = append(env, "AWS_CONFIG_FILE="+os.DevNull, "AWS_SHARED_CREDENTIALS_FILE="+os.DevNull, "AWS_EC2_METADATA_DISABLED=true")
	return append(append(env, s.env...), extra...)
}

// start starts pipe with args and the server's credentials.
func (s *s3Server) start(t *testing.T, dir string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	bin, err := exec.LookPath("pipe")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = s.pipeEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out, &errOut
}

// wait waits for a started pipe (at most 5 minutes) and checks that no secret shows in
// what it printed.
func (s *s3Server) wait(t *testing.T, cmd *exec.Cmd, out, errOut *bytes.Buffer) pipeResult {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Minute):
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		t.Fatalf("pipe %v ran past 5 minutes; stopped (%v):\n%s", cmd.Args[1:], <-done, errOut.String())
	}
	r := pipeResult{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("pipe %v: %v", cmd.Args[1:], err)
	}
	if strings.Contains(r.stdout+r.stderr, s.secret) {
		t.Errorf("pipe %v printed the secret access key:\n%s\n%s", cmd.Args[1:], r.stdout, r.stderr)
	}
	// The AWS SDK logs to stderr on its own ("SDK <time> WARN ..."): none of it may show.
	if i := strings.Index(r.stderr, "SDK "); i >= 0 {
		t.Errorf("pipe %v printed the AWS SDK's log: %s", cmd.Args[1:], r.stderr[i:])
	}
	return r
}

// pipe runs pipe in dir and returns its outcome.
func (s *s3Server) pipe(t *testing.T, dir string, args ...string) pipeResult {
	t.Helper()
	cmd, out, errOut := s.start(t, dir, args...)
	return s.wait(t, cmd, out, errOut)
}

// must runs pipe and fails the test unless it exits 0.
func (s *s3Server) must(t *testing.T, dir string, args ...string) pipeResult {
	t.Helper()
	r := s.pipe(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("pipe %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// filerEntry is one entry of a filer folder listing.
type filerEntry struct {
	FullPath string
	FileSize int64
	Mode     uint32
}

func (e filerEntry) isDir() bool { return e.Mode&uint32(os.ModeDir) != 0 }

// list lists a folder of the bucket (path relative to the bucket, "" for its top) through
// the filer; an absent folder is empty.
func (s *s3Server) list(t *testing.T, dir string) []filerEntry {
	t.Helper()
	var all []filerEntry
	last := ""
	for {
		u := s.filer + "/buckets/pipe/" + dir
		if !strings.HasSuffix(u, "/") {
			u += "/"
		}
		u += "?limit=1000&lastFileName=" + url.QueryEscape(last)
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("filer list %s: %v", u, err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatalf("filer list %s: %v", u, err)
		}
		if resp.StatusCode == http.StatusNotFound {
			return all
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("filer list %s: %s\n%s", u, resp.Status, body)
		}
		var page struct {
			Entries               []filerEntry
			LastFileName          string
			ShouldDisplayLoadMore bool
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("filer list %s: %v\n%s", u, err, body)
		}
		all = append(all, page.Entries...)
		if !page.ShouldDisplayLoadMore || len(page.Entries) == 0 {
			return all
		}
		last = page.LastFileName
	}
}

// get reads an object of the bucket through the filer; ok is false when it is absent.
func (s *s3Server) get(t *testing.T, key string) (data []byte, ok bool) {
	t.Helper()
	resp, err := http.Get(s.filer + "/buckets/pipe/" + key)
	if err != nil {
		t.Fatalf("filer get %s: %v", key, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("filer get %s: %v", key, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return data, true
	case http.StatusNotFound:
		return nil, false
	}
	t.Fatalf("filer get %s: %s", key, resp.Status)
	return nil, false
}

// put overwrites an object of the bucket through the filer (what a damaged disk or a
// careless hand does to a remote).
func (s *s3Server) put(t *testing.T, key string, data []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, s.filer+"/buckets/pipe/"+key, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("filer put %s: %v", key, err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("filer put %s: %s\n%s", key, resp.Status, body)
	}
}

// settle waits (at most 30 s) until the objects under prefix stay the same for a second.
func (s *s3Server) settle(t *testing.T, prefix string) {
	t.Helper()
	snapshot := func() string {
		var names []string
		for _, dir := range []string{"blobs", "manifests", "heads"} {
			for _, e := range s.list(t, prefix+"/"+dir) {
				names = append(names, fmt.Sprintf("%s:%d", e.FullPath, e.FileSize))
			}
		}
		return strings.Join(names, " ")
	}
	last := snapshot()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(time.Second)
		now := snapshot()
		if now == last {
			return
		}
		last = now
	}
	t.Fatalf("the bucket under %s/ still changed 30 s after the push was killed", prefix)
}

// checkRemote checks the remote under prefix from outside: every manifest parses, and every
// blob it names is present with its size and digest. It returns the manifests' keys.
func (s *s3Server) checkRemote(t *testing.T, prefix string) []string {
	t.Helper()
	var keys []string
	for _, e := range s.list(t, prefix+"/manifests") {
		name := filepath.Base(e.FullPath)
		key, ok := strings.CutSuffix(name, ".json")
		if !ok || e.isDir() {
			t.Errorf("unexpected object %s under manifests/", e.FullPath)
			continue
		}
		v, ok := s.get(t, prefix+"/manifests/"+name)
		if !ok {
			t.Errorf("manifest %s listed but absent", name)
			continue
		}
		m, err := artifacts.DecodeManifest(key, v)
		if err != nil {
			t.Errorf("manifest %s: %v", name, err)
			continue
		}
		for out, o := range m.Outputs {
			data, ok := s.get(t, prefix+"/blobs/"+string(o.Digest))
			if !ok {
				t.Errorf("manifest %s (%s, output %s) names blob %s, which the remote lacks", key, m.Kind, out, o.Digest)
				continue
			}
			sum := sha256.Sum256(data)
			if int64(len(data)) != o.Bytes || hex.EncodeToString(sum[:]) != string(o.Digest) {
				t.Errorf("blob %s of manifest %s: %d bytes hashing to %x, want %d bytes", o.Digest, key, len(data), sum, o.Bytes)
			}
		}
		keys = append(keys, key)
	}
	return keys
}

// writeDAG writes a DAG file into dir.
func writeDAG(t *testing.T, dir, name, src string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// copyDir copies a store folder (a second machine that made the same results).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v\n%s", src, dst, err, out)
	}
}

// TestS3PushPull pushes the tiny DAG's results to the bucket, then a second machine (a
// fresh store, the same bucket) gets every instance from it, running none, and reports the
// same bytes, by `pipe run --remote` and by `pipe pull`. The bucket holds blobs, manifests
// and heads only.
func TestS3PushPull(t *testing.T) {
	s := startS3(t)
	dir := t.TempDir()
	dag := writeDAG(t, dir, "tiny.yaml", s3TinyDAG)
	a := filepath.Join(dir, "a")
	s.must(t, dir, "--store", a, "run", dag)
	want := s.must(t, dir, "--store", a, "report", dag).stdout

	r := s.must(t, dir, "--store", a, "push", dag, "--remote", s.url)
	if !strings.Contains(r.stderr, "pushed 9 instances") {
		t.Errorf("push: want 'pushed 9 instances' in\n%s", r.stderr)
	}
	if keys := s.checkRemote(t, ""); len(keys) != 9 {
		t.Errorf("remote holds %d manifests, want 9: %v", len(keys), keys)
	}
	var top []string
	for _, e := range s.list(t, "") {
		top = append(top, filepath.Base(e.FullPath))
	}
	if got := strings.Join(top, " "); got != "blobs heads manifests" {
		t.Errorf("bucket top level: %q, want only blobs, heads and manifests", got)
	}
	if _, ok := s.get(t, "heads/tiny/train/_.json"); !ok {
		t.Error("no head heads/tiny/train/_.json in the bucket")
	}

	// Another machine: every instance is cached (remote), none runs.
	b := filepath.Join(dir, "b")
	start := time.Now()
	r = s.must(t, dir, "--store", b, "run", "--json", dag, "--remote", s.url)
	t.Logf("run on a fresh store from the S3 remote: %.1f s", time.Since(start).Seconds())
	var rj runJSON
	if err := json.Unmarshal([]byte(r.stdout), &rj); err != nil {
		t.Fatalf("run --json: %v\n%s", err, r.stdout)
	}
	if len(rj.Stages) != 9 {
		t.Errorf("run --json lists %d instances, want 9", len(rj.Stages))
	}
	for _, st := range rj.Stages {
		if st.Status != "cached" || !st.Remote {
			t.Errorf("%s: status %q remote %v, want cached from the remote (%s)", st.Name, st.Status, st.Remote, st.Reason)
		}
	}
	if !strings.Contains(r.stderr, "cached (remote) report") {
		t.Errorf("run: want a 'cached (remote) report' line in\n%s", r.stderr)
	}
	if got := s.must(t, dir, "--store", b, "report", dag).stdout; got != want {
		t.Errorf("report from the pulled store differs:\n%s\nwant\n%s", got, want)
	}

	// pipe pull on a third machine, then its report offline.
	c := filepath.Join(dir, "c")
	r = s.must(t, dir, "--store", c, "pull", dag, "--remote", s.url)
	if !strings.Contains(r.stderr, "pulled 9 instances") {
		t.Errorf("pull: want 'pulled 9 instances' in\n%s", r.stderr)
	}
	if got := s.must(t, dir, "--store", c, "report", dag).stdout; got != want {
		t.Errorf("report after pipe pull differs:\n%s\nwant\n%s", got, want)
	}
	r = s.must(t, dir, "--store", c, "run", dag)
	if !strings.Contains(r.stderr, "0 ran, 9 cached") {
		t.Errorf("run after pull: want '0 ran, 9 cached' in\n%s", r.stderr)
	}
}

// TestS3ConcurrentPushers pushes at once from three machines (copies of one store): the same
// DAG twice, and a second DAG that shares its upstream instances (ingest, features, augment,
// clusters) with the first. The remote is consistent afterwards (every manifest's blobs
// present and intact), holds each instance once, and a fresh store pulls both DAGs.
func TestS3ConcurrentPushers(t *testing.T) {
	s := startS3(t)
	dir := t.TempDir()
	dag := writeDAG(t, dir, "tiny.yaml", s3TinyDAG)
	dag2 := writeDAG(t, dir, "tiny2.yaml", strings.Replace(strings.Replace(s3TinyDAG, "name: tiny", "name: tiny2", 1), "T: 3,", "T: 2,", 1))
	a := filepath.Join(dir, "a")
	s.must(t, dir, "--store", a, "run", dag)
	s.must(t, dir, "--store", a, "run", dag2)
	want := s.must(t, dir, "--store", a, "report", dag).stdout
	want2 := s.must(t, dir, "--store", a, "report", dag2).stdout
	for _, m := range []string{"m1", "m2", "m3"} {
		copyDir(t, a, filepath.Join(dir, m))
	}
	for round := range 3 {
		prefix := fmt.Sprintf("round%d", round)
		remote := s.prefixed(prefix)
		var wg sync.WaitGroup
		results := make([]pipeResult, 3)
		for i, job := range []struct{ store, dag string }{{"m1", dag}, {"m2", dag}, {"m3", dag2}} {
			cmd, out, errOut := s.start(t, dir, "--store", filepath.Join(dir, job.store), "push", job.dag, "--remote", remote)
			wg.Go(func() { results[i] = s.wait(t, cmd, out, errOut) })
		}
		wg.Wait()
		var moved []string
		for i, r := range results {
			if r.code != 0 {
				t.Fatalf("round %d: pusher %d: exit %d\n%s", round, i+1, r.code, r.stderr)
			}
			for _, line := range strings.Split(r.stderr, "\n") {
				if _, what, ok := strings.Cut(line, ": pushed "); ok {
					moved = append(moved, "pushed "+what)
				}
			}
		}
		// How much the pushes overlapped: a pusher that found an instance present skips it.
		t.Logf("round %d: %s", round, strings.Join(moved, "; "))
		// tiny and tiny2 differ from tasks on (T): 9 + 5 instances.
		if keys := s.checkRemote(t, prefix); len(keys) != 14 {
			t.Errorf("round %d: remote holds %d manifests, want 14", round, len(keys))
		}
		fresh := filepath.Join(dir, "fresh-"+prefix)
		s.must(t, dir, "--store", fresh, "pull", dag, "--remote", remote)
		s.must(t, dir, "--store", fresh, "pull", dag2, "--remote", remote)
		if got := s.must(t, dir, "--store", fresh, "report", dag).stdout; got != want {
			t.Errorf("round %d: report of tiny after pull differs:\n%s\nwant\n%s", round, got, want)
		}
		if got := s.must(t, dir, "--store", fresh, "report", dag2).stdout; got != want2 {
			t.Errorf("round %d: report of tiny2 after pull differs:\n%s\nwant\n%s", round, got, want2)
		}
	}
}

// bigDAG has one large output (5,000,000 float64 values, 40 MB of Arrow IPC) so that a push
// takes long enough to be killed in the middle of its upload, and a small stage after it.
const bigDAG = `name: big
stages:
  big: {kind: tcount, with: {n: 5000000}}
  sum: {kind: tcount, needs: [big]}
`

// killDAG has two large outputs and a small stage after them: a push killed after its first
// blob is still in the middle of its work.
const killDAG = `name: kill
stages:
  big1: {kind: tcount, with: {n: 5000000}}
  big2: {kind: tcount, with: {n: 5000000, offset: 1}}
  sum: {kind: tcount, needs: [big1, big2]}
`

// TestS3KilledPush kills a push (SIGKILL) twice: while its first blob is being uploaded (a
// multipart upload in progress), and as soon as a first blob is complete. Each time the
// remote then holds no manifest whose blobs are missing or damaged, a fresh store pulls only
// what is complete, and a later push completes the rest.
func TestS3KilledPush(t *testing.T) {
	s := startS3(t)
	dir := t.TempDir()
	dag := writeDAG(t, dir, "kill.yaml", killDAG)
	a := filepath.Join(dir, "a")
	s.must(t, dir, "--store", a, "run", dag)

	for _, when := range []string{"upload", "blob"} {
		remote := s.prefixed(when)
		cmd, out, errOut := s.start(t, dir, "--store", a, "push", dag, "--remote", remote)
		// The server keeps a multipart upload's parts under .uploads/ until it completes.
		started := func() bool {
			if when == "upload" {
				return len(s.list(t, ".uploads")) > 0 || len(s.list(t, when+"/blobs")) > 0
			}
			return len(s.list(t, when+"/blobs")) > 0
		}
		deadline := time.Now().Add(2 * time.Minute)
		for !started() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: nothing showed within 2 minutes:\n%s", when, errOut.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		r := s.wait(t, cmd, out, errOut)
		if r.code != -1 {
			t.Fatalf("%s: push exited %d before the kill landed (make the tables bigger):\n%s", when, r.code, r.stderr)
		}
		// A request the server had wholly received when the client died still completes
		// (a manifest's PUT, say): look once the bucket has stopped changing.
		s.settle(t, when)
		blobs := s.list(t, when+"/blobs")
		keys := s.checkRemote(t, when)
		t.Logf("%s: killed the push with %d blobs and %d manifests in the bucket", when, len(blobs), len(keys))
		if len(keys) == 3 {
			t.Errorf("%s: the killed push left all 3 manifests: the kill landed too late to test anything", when)
		}
		if when == "upload" && len(keys) != 0 {
			t.Errorf("upload: after a push killed in its first upload the remote holds manifests %v, want none", keys)
		}
		// A second machine pulls what is complete and names the rest.
		fresh := filepath.Join(dir, "fresh-"+when)
		r = s.pipe(t, dir, "--store", fresh, "pull", dag, "--remote", remote)
		if want := fmt.Sprintf("%d of 3 instances are not in the remote", 3-len(keys)); r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: pull after the killed push: exit %d, want 1 and %q:\n%s", when, r.code, want, r.stderr)
		}
		// The push again completes.
		r = s.must(t, dir, "--store", a, "push", dag, "--remote", remote)
		if want := fmt.Sprintf("pushed %d instances", 3-len(keys)); !strings.Contains(r.stderr, want) {
			t.Errorf("%s: push after the kill: want %q in\n%s", when, want, r.stderr)
		}
		if keys := s.checkRemote(t, when); len(keys) != 3 {
			t.Errorf("%s: remote holds %d manifests after the second push, want 3", when, len(keys))
		}
		s.must(t, dir, "--store", fresh, "pull", dag, "--remote", remote)
		s.must(t, dir, "--store", fresh, "artifacts", "verify")
		r = s.must(t, dir, "--store", fresh, "run", dag)
		if !strings.Contains(r.stderr, "0 ran, 3 cached") {
			t.Errorf("%s: run after the pull: want '0 ran, 3 cached' in\n%s", when, r.stderr)
		}
	}
}

// TestS3TamperedBlob damages one blob in the bucket (same size, one byte changed): pull
// refuses it, naming the digest mismatch, and stores nothing of that instance; a run with
// the remote runs the instance locally instead.
func TestS3TamperedBlob(t *testing.T) {
	s := startS3(t)
	dir := t.TempDir()
	dag := writeDAG(t, dir, "big.yaml", strings.Replace(bigDAG, "5000000", "1000", 1))
	a := filepath.Join(dir, "a")
	r := s.must(t, dir, "--store", a, "run", "--json", dag)
	var rj runJSON
	if err := json.Unmarshal([]byte(r.stdout), &rj); err != nil {
		t.Fatalf("run --json: %v\n%s", err, r.stdout)
	}
	var digest string
	for _, st := range rj.Stages {
		if st.Name == "big" {
			digest = st.Outputs["out"]
		}
	}
	if digest == "" {
		t.Fatalf("no output digest of stage big in\n%s", r.stdout)
	}
	s.must(t, dir, "--store", a, "push", dag, "--remote", s.url)
	data, ok := s.get(t, "blobs/"+digest)
	if !ok {
		t.Fatalf("blob %s not in the bucket after push", digest)
	}
	data[len(data)/2] ^= 0x01
	s.put(t, "blobs/"+digest, data)
	if got, _ := s.get(t, "blobs/"+digest); !bytes.Equal(got, data) {
		t.Fatal("the filer did not overwrite the blob")
	}

	b := filepath.Join(dir, "b")
	r = s.pipe(t, dir, "--store", b, "pull", dag, "--remote", s.url)
	if r.code == 0 || !strings.Contains(r.stderr, "does not match its digest") || !strings.Contains(r.stderr, digest) {
		t.Errorf("pull of a tampered blob: exit %d, want a failure naming blob %s and the digest mismatch:\n%s", r.code, digest, r.stderr)
	}
	t.Logf("pull of a tampered blob: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	st := s.pipe(t, dir, "--store", b, "status", dag)
	if strings.Contains(st.stdout, "fresh") && !strings.Contains(st.stdout, "missing") {
		t.Errorf("after the refused pull, status shows the instance as local:\n%s", st.stdout)
	}
	r = s.must(t, dir, "--store", b, "run", "--json", dag, "--remote", s.url)
	rj = runJSON{}
	if err := json.Unmarshal([]byte(r.stdout), &rj); err != nil {
		t.Fatalf("run --json: %v\n%s", err, r.stdout)
	}
	for _, st := range rj.Stages {
		if st.Name == "big" && (st.Status != "ran" || st.Outputs["out"] != digest) {
			t.Errorf("big after a tampered remote copy: status %q digest %s, want ran locally making %s (%s)", st.Status, st.Outputs["out"], digest, st.Reason)
		}
	}
}

// TestS3Credentials checks that credentials come from the environment only and never show:
// a wrong secret is refused by the server with an error naming the remote (exit 4, the
// store's code) but not the secret; a key written into the URL is not printed. A missing
// bucket is exit 4 too, naming it.
func TestS3Credentials(t *testing.T) {
	s := startS3(t)
	dir := t.TempDir()
	dag := writeDAG(t, dir, "big.yaml", strings.Replace(bigDAG, "5000000", "10", 1))
	a := filepath.Join(dir, "a")
	s.must(t, dir, "--store", a, "run", dag)

	wrong := "wrong" + s.secret[5:]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, mustLookPipe(t), "--store", a, "push", dag, "--remote", s.url)
	cmd.Dir = dir
	cmd.Env = s.pipeEnv("AWS_SECRET_ACCESS_KEY=" + wrong)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 {
		t.Errorf("push with a wrong secret: %v, want exit 4\n%s", err, out)
	}
	if !strings.Contains(string(out), "remote s3://pipe?") {
		t.Errorf("push with a wrong secret: the error does not name the remote:\n%s", out)
	}
	for _, secret := range []string{wrong, s.secret} {
		if strings.Contains(string(out), secret) {
			t.Errorf("push with a wrong secret printed a secret:\n%s", out)
		}
	}
	t.Logf("push with a wrong secret: %s", bytes.TrimSpace(out))

	// No credentials at all: exit 4, naming the remote and the missing credentials.
	var noKeys []string
	for _, kv := range s.pipeEnv() {
		if !strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") && !strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") {
			noKeys = append(noKeys, kv)
		}
	}
	cmd = exec.CommandContext(ctx, mustLookPipe(t), "--store", a, "status", dag, "--remote", s.url)
	cmd.Dir, cmd.Env = dir, noKeys
	out, err = cmd.CombinedOutput()
	if !errors.As(err, &exit) || exit.ExitCode() != 4 || !strings.Contains(string(out), "remote s3://pipe?") || !strings.Contains(string(out), "get credentials") {
		t.Errorf("status without credentials: %v, want exit 4 naming the remote and the credentials:\n%s", err, out)
	}

	// A bucket that does not exist: exit 4, naming the remote and what the server said.
	nosuch := strings.Replace(s.url, "s3://pipe?", "s3://nosuchbucket?", 1)
	r := s.pipe(t, dir, "--store", a, "status", dag, "--remote", nosuch)
	if r.code != 4 || !strings.Contains(r.stderr, "remote s3://nosuchbucket?") || !strings.Contains(r.stderr, "NoSuchBucket") {
		t.Errorf("status with a missing bucket: exit %d, want 4 naming the remote and NoSuchBucket:\n%s", r.code, r.stderr)
	}

	// Credentials in the URL are not the way, and are never echoed.
	withUser := strings.Replace(s.url, "s3://", "s3://AKIDINURL:"+s.secret+"@", 1)
	r = s.pipe(t, dir, "--store", a, "status", dag, "--remote", withUser)
	if strings.Contains(r.stdout+r.stderr, "AKIDINURL") {
		t.Errorf("status with user info in the URL printed it:\n%s%s", r.stdout, r.stderr)
	}
}

func mustLookPipe(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("pipe")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
