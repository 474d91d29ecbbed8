// Package s3test runs a real S3-compatible server for tests: versitygw
// (Apache-2.0) with its POSIX backend on a temporary directory. The first
// use on a machine installs versitygw with `go install` from the Go module
// proxy (a few minutes), into the user's cache directory; later uses find
// it there or on PATH.
package s3test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Module is the versitygw release the tests run.
const Module = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Region is the region the server answers for.
const Region = "us-east-1"

var (
	installOnce sync.Once
	binary      string
	installErr  error
)

// Binary returns the versitygw executable, installing it when missing.
func Binary() (string, error) {
	installOnce.Do(func() {
		if p, err := exec.LookPath("versitygw"); err == nil {
			binary = p
			return
		}
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir := filepath.Join(base, "alignflow-tools", "versitygw-v1.8.0")
		binary = filepath.Join(dir, "versitygw")
		if _, err := os.Stat(binary); err == nil {
			return
		}
		// Built into a private directory and renamed into place, so that
		// test processes installing at once never see half a binary.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			installErr = err
			return
		}
		tmp, err := os.MkdirTemp(dir, ".install-*")
		if err != nil {
			installErr = err
			return
		}
		defer os.RemoveAll(tmp)
		cmd := exec.Command("go", "install", Module)
		cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			installErr = fmt.Errorf("go install %s: %v\n%s", Module, err, out)
			return
		}
		installErr = os.Rename(filepath.Join(tmp, "versitygw"), binary)
	})
	return binary, installErr
}

// Server is a running versitygw.
type Server struct {
	// Dir is the backend's root: each subdirectory is a bucket.
	Dir                  string
	AccessKey, SecretKey string
	port                 int
	bin, meta            string
	cmd                  *exec.Cmd
	exited               chan error
	log                  *os.File
}

// Start runs a server with the given buckets on a free port until the
// test ends. Without versitygw and a way to install it the test is
// skipped, or fails where CI=true.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("s3test: %v", err)
		}
		t.Skipf("s3test: no versitygw (%v)", err)
	}
	s := &Server{Dir: t.TempDir(), meta: t.TempDir(), AccessKey: "alignflow-test", SecretKey: "alignflow-test-secret", bin: bin}
	for _, b := range buckets {
		if err := os.MkdirAll(filepath.Join(s.Dir, b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if s.log, err = os.Create(filepath.Join(t.TempDir(), "versitygw.log")); err != nil {
		t.Fatal(err)
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() error {
	s.cmd = exec.Command(s.bin, "--port", "127.0.0.1:"+strconv.Itoa(s.port), "--access", s.AccessKey, "--secret", s.SecretKey,
		"--region", Region, "posix", "--sidecar", s.meta, s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw: %w", err)
	}
	s.exited = make(chan error, 1)
	go func(c *exec.Cmd) { s.exited <- c.Wait() }(s.cmd)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.exited:
			s.cmd = nil
			b, _ := os.ReadFile(s.log.Name())
			return fmt.Errorf("versitygw exited (%v):\n%s", err, b)
		default:
		}
		if c, err := net.Dial("tcp", s.Addr()); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(s.log.Name())
	return fmt.Errorf("versitygw did not listen on %s within 30 s:\n%s", s.Addr(), b)
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the store URL of a bucket on this server.
func (s *Server) URL(bucket string) string {
	return fmt.Sprintf("s3://%s?endpoint=http://%s&region=%s&use_path_style=true", bucket, s.Addr(), Region)
}

// Env are the environment variables that give a client the server's
// credentials.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey, "AWS_REGION=" + Region,
		"AWS_EC2_METADATA_DISABLED=true"}
}

// SetEnv gives this test process the server's credentials.
func (s *Server) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Stop kills the server (its data stays in Dir).
func (s *Server) Stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// Restart stops the server and starts it again on the same port and data.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}
