// Package pgtest runs a real PostgreSQL server for tests (Debian's
// postgresql package: initdb and postgres from /usr/lib/postgresql/*/bin
// or PATH), on a free port in a temporary directory, for as long as the
// test runs. As root it runs the server as the postgres user, since
// PostgreSQL refuses to run as root.
package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// User is the database superuser the server is set up with (trust
// authentication on the loopback address).
const User = "postgres"

// Server is a running PostgreSQL.
type Server struct {
	// Addr is host:port.
	Addr   string
	bin    string
	data   string
	runAs  []string // runuser prefix, as root
	cmd    *exec.Cmd
	exited chan error
	log    string
}

// binDir finds the directory holding initdb and postgres.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// Debian links a few of the tools into /usr/local/bin or
		// /usr/bin; the rest (pg_isready, postgres) are beside the target.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "pg_isready")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin; install it with `apt-get install postgresql`")
}

func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// Start runs a fresh server until the test ends. Without PostgreSQL the
// test is skipped, or fails where CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %v", err)
		}
		t.Skipf("pgtest: %v", err)
	}
	// Not t.TempDir: its parents are private to root, and the server may
	// run as postgres.
	dir, err := os.MkdirTemp("", "alignflow-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{bin: bin, data: filepath.Join(dir, "data"), log: filepath.Join(dir, "postgres.log")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgtest: running as root needs the postgres user (Debian's postgresql package creates it): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		s.runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	if out, err := s.command("initdb", "-D", s.data, "-U", User, "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.Addr = "127.0.0.1:" + strconv.Itoa(port)
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s.cmd = s.command("postgres", "-D", s.data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// Its own process group, so that Stop reaches the server through runuser.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("pgtest: start postgres: %v", err)
	}
	s.exited = make(chan error, 1)
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(s.Stop)
	if err := s.waitReady(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	argv := append(append(append([]string(nil), s.runAs...), filepath.Join(s.bin, name)), args...)
	return exec.Command(argv[0], argv[1:]...)
}

// waitReady waits until the server accepts queries (pg_isready).
func (s *Server) waitReady() error {
	host, port, _ := net.SplitHostPort(s.Addr)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-s.exited:
			b, _ := os.ReadFile(s.log)
			return fmt.Errorf("pgtest: postgres exited (%v):\n%s", err, b)
		default:
		}
		if exec.Command(filepath.Join(s.bin, "pg_isready"), "-h", host, "-p", port, "-U", User, "-q").Run() == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(s.log)
	return fmt.Errorf("pgtest: postgres not ready on %s within 60 s:\n%s", s.Addr, b)
}

// Stop stops the server.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		pgid := -s.cmd.Process.Pid
		_ = syscall.Kill(pgid, syscall.SIGINT) // PostgreSQL's fast shutdown
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
			<-s.exited
		}
		s.cmd = nil
	}
}
