// Package devserver runs an embedded, single-process Temporal server for local
// development (what temporalite used to be, and what `temporal server
// start-dev` does), backed by a SQLite file (or memory) via the pure-Go
// modernc driver, so it builds with CGO_ENABLED=0.
//
// A server started on a DBFile keeps its history across restarts: namespaces,
// workflow histories, visibility records and custom search attributes survive
// Stop and a later Start on the same file. An exclusive lock on DBFile+".lock"
// keeps two processes from sharing one database file.
//
// The server's approach follows temporalio/cli's devserver package, adapted to
// the public packages of go.temporal.io/server v1.32.1.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	enums "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/temporal"
)

// Defaults applied by Start to zero-valued Options fields.
const (
	DefaultIP        = "127.0.0.1"
	DefaultPort      = 7233
	DefaultNamespace = "default"
	// DefaultRetention is the workflow retention of namespaces Start creates.
	DefaultRetention = 7 * 24 * time.Hour
	// StartTimeout bounds Start's wait for readiness when its context has no
	// deadline.
	StartTimeout = time.Minute
)

// Options configures Start. The zero value starts an in-memory server on a
// free port of 127.0.0.1 with the "default" namespace.
type Options struct {
	// DBFile is the SQLite database file. Its parent directories are created
	// when missing. The schema is set up only when the file is new; an
	// existing file keeps its history. "" means an in-memory database (no
	// persistence, no lock).
	DBFile string
	// IP is the address the frontend binds to. Default "127.0.0.1";
	// "localhost" is treated as 127.0.0.1. The internal services (history,
	// matching, worker) always bind to the loopback address.
	IP string
	// Port is the frontend gRPC port. 0 means pick a free port; pass
	// DefaultPort (7233, what the CLI's --port defaults to) for the standard
	// one. The history, matching and worker services always get free ports.
	Port int
	// Namespace is the namespace to create if missing (retention
	// DefaultRetention). Default "default".
	Namespace string
	// SearchAttributes are custom search attributes registered in Namespace
	// after every Start (idempotent: existing ones are kept). Start fails if
	// a name is already registered with a different type.
	SearchAttributes map[string]enums.IndexedValueType
	// Logger receives the server's logs. Optional: nil means slog.Default().
	// Only records at LogLevel and above are passed on.
	Logger *slog.Logger
	// LogLevel is the minimum level of server logs passed to Logger.
	// Optional: nil means slog.LevelWarn (quiet).
	LogLevel slog.Leveler
	// Postgres, when set, persists the server in PostgreSQL instead of
	// SQLite (DBFile must then be empty).
	Postgres *Postgres
}

// Server is a running embedded Temporal server. Create it with Start and
// release it with Stop.
type Server struct {
	srv       temporal.Server
	log       *serverLogger
	lock      *fileLock
	hostPort  string
	namespace string

	stopOnce sync.Once
	stopErr  error
}

// ErrPortInUse is matched (errors.Is) by the error Start returns when the
// frontend port is taken.
var ErrPortInUse = errors.New("port already in use")

// ErrDBLocked is matched (errors.Is) by the error Start returns when another
// server (in this or another process) holds the DBFile's lock.
var ErrDBLocked = errors.New("database file is locked by another server")

// PortInUseError reports a port that could not be bound.
type PortInUseError struct {
	IP   string
	Port int
	Err  error // the bind error
}

// Error returns the user-facing message, which names the port and suggests --port.
func (e *PortInUseError) Error() string {
	return fmt.Sprintf("port %d on %s is already in use (is another Temporal server or \"alignflow dev\" running? choose another with --port)", e.Port, e.IP)
}

// Is makes errors.Is(err, ErrPortInUse) true.
func (e *PortInUseError) Is(target error) bool { return target == ErrPortInUse }

// Unwrap returns the bind error.
func (e *PortInUseError) Unwrap() error { return e.Err }

// Start starts the server and returns once the frontend accepts connections
// and the namespace and search attributes are ready. ctx bounds the start-up
// (waiting for readiness; StartTimeout if ctx has no deadline); it does not
// bound the server's lifetime. On error everything started so far is stopped
// and the lock is released.
func Start(ctx context.Context, opts Options) (s *Server, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	logger := newServerLogger(opts.Logger, opts.LogLevel)

	// The lock comes first, so that two processes never both touch the file
	// (schema setup, namespace creation) or fight over the history shard.
	var lock *fileLock
	if opts.DBFile != "" {
		if lock, err = acquireLock(opts.DBFile); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = lock.release()
			}
		}()
	}

	ports, err := allocatePorts(opts.IP, opts.Port)
	if err != nil {
		return nil, err
	}
	return start(ctx, opts, ports, logger, lock)
}

// start is Start after the lock is taken and the ports are chosen.
func start(ctx context.Context, opts Options, ports ports, logger *serverLogger, lock *fileLock) (*Server, error) {
	conf, err := buildConfig(opts, ports)
	if err != nil {
		return nil, err
	}
	if err := prepareDatabase(opts, conf); err != nil {
		return nil, err
	}
	serverOpts, err := buildServerOptions(conf, ports, logger)
	if err != nil {
		return nil, err
	}

	s := &Server{
		log:       logger,
		lock:      lock,
		hostPort:  ports.frontendDial(),
		namespace: opts.Namespace,
	}
	// The server reports some fatal conditions through logger.Fatal, which
	// serverLogger turns into a panic: turn that back into an error.
	if err := catchFatal(func() error {
		srv, err := temporal.NewServer(serverOpts...)
		if err != nil {
			return fmt.Errorf("create temporal server: %w", err)
		}
		s.srv = srv
		if err := srv.Start(); err != nil {
			return fmt.Errorf("start temporal server: %w", err)
		}
		return nil
	}); err != nil {
		if s.srv != nil {
			logger.silence()
			_ = catchFatal(s.srv.Stop)
		}
		return nil, fmt.Errorf("devserver: %w", err)
	}
	if err := s.waitReady(ctx, opts); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.IP == "" || o.IP == "localhost" {
		o.IP = DefaultIP
	}
	if net.ParseIP(o.IP) == nil {
		return o, fmt.Errorf("devserver: invalid IP %q: want an IP address such as 127.0.0.1", o.IP)
	}
	if o.Port < 0 || o.Port > 65535 {
		return o, fmt.Errorf("devserver: invalid port %d", o.Port)
	}
	var err error
	if o.DBFile, err = absDBFile(o.DBFile); err != nil {
		return o, err
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Postgres != nil {
		if o.DBFile != "" {
			return o, fmt.Errorf("devserver: a database file (%s) and PostgreSQL (%s) are exclusive", o.DBFile, o.Postgres.Addr)
		}
		pg := *o.Postgres
		pg.withDefaults()
		o.Postgres = &pg
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.LogLevel == nil {
		o.LogLevel = slog.LevelWarn
	}
	return o, nil
}

// waitReady dials the frontend, waits for the namespace and registers the
// search attributes.
func (s *Server) waitReady(ctx context.Context, opts Options) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, StartTimeout)
		defer cancel()
	}
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	if opts.Postgres != nil {
		if err := retry(ctx, func(ctx context.Context) error { return registerNamespace(ctx, c.WorkflowService(), s.namespace) }); err != nil {
			return fmt.Errorf("devserver: register namespace %q: %w", s.namespace, err)
		}
	}
	// The namespace was written to the database before start (SQLite) or
	// registered above; the registry reads it through, but retry briefly in
	// case the frontend lags.
	if err := retry(ctx, func(ctx context.Context) error {
		_, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: s.namespace})
		return err
	}); err != nil {
		return fmt.Errorf("devserver: namespace %q not ready: %w", s.namespace, err)
	}
	if len(opts.SearchAttributes) > 0 {
		if err := EnsureSearchAttributes(ctx, c.OperatorService(), s.namespace, opts.SearchAttributes); err != nil {
			return err
		}
	}
	return nil
}

// dial connects an SDK client to the frontend, retrying until ctx is done.
func (s *Server) dial(ctx context.Context) (client.Client, error) {
	var c client.Client
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		c, err = client.DialContext(ctx, client.Options{
			HostPort:  s.hostPort,
			Namespace: s.namespace,
			Logger:    sdklog.NewStructuredLogger(s.log.slog()),
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("devserver: frontend %s not reachable: %w", s.hostPort, err)
	}
	return c, nil
}

// EnsureSearchAttributes registers the missing attributes of want in ns and
// checks that existing ones have the wanted type.
func EnsureSearchAttributes(ctx context.Context, op operatorservice.OperatorServiceClient, ns string, want map[string]enums.IndexedValueType) error {
	list := func() (map[string]enums.IndexedValueType, error) {
		var resp *operatorservice.ListSearchAttributesResponse
		err := retry(ctx, func(ctx context.Context) error {
			var err error
			resp, err = op.ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: ns})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("devserver: list search attributes of namespace %q: %w", ns, err)
		}
		return resp.GetCustomAttributes(), nil
	}
	have, err := list()
	if err != nil {
		return err
	}
	missing := map[string]enums.IndexedValueType{}
	for name, typ := range want {
		if _, ok := have[name]; !ok {
			missing[name] = typ
		}
	}
	if len(missing) > 0 {
		_, err := op.AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
			Namespace:        ns,
			SearchAttributes: missing,
		})
		var exists *serviceerror.AlreadyExists
		if err != nil && !errors.As(err, &exists) {
			return fmt.Errorf("devserver: add search attributes %v to namespace %q: %w", sortedNames(missing), ns, err)
		}
		if have, err = list(); err != nil {
			return err
		}
	}
	for _, name := range sortedNames(want) {
		got, ok := have[name]
		switch {
		case !ok:
			return fmt.Errorf("devserver: search attribute %q was not registered in namespace %q", name, ns)
		case got != want[name]:
			return fmt.Errorf("devserver: search attribute %q is registered in namespace %q as %v, not %v (types cannot change; use another name or a new database file)", name, ns, got, want[name])
		}
	}
	return nil
}

// retry calls f until it succeeds or ctx is done, with a short back-off.
// Each attempt gets at most 5 s.
func retry(ctx context.Context, f func(context.Context) error) error {
	delay := 20 * time.Millisecond
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// FrontendHostPort returns the address clients dial, e.g. "127.0.0.1:7233".
func (s *Server) FrontendHostPort() string { return s.hostPort }

// Namespace returns the namespace Start created or found.
func (s *Server) Namespace() string { return s.namespace }

// Stop stops the server gracefully and releases the database file lock. The
// server's logs are silenced first, to hide shutdown noise. Stop is
// idempotent; later calls return the first call's result.
//
// The SQLite driver of the Temporal server keeps its connection to the
// database open for the life of the process, so a stopped server's file stays
// open (but unlocked) until the process exits.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.log.silence()
		if s.srv != nil {
			if err := catchFatal(s.srv.Stop); err != nil {
				s.stopErr = fmt.Errorf("devserver: stop temporal server: %w", err)
			}
		}
		if s.lock != nil {
			if err := s.lock.release(); err != nil && s.stopErr == nil {
				s.stopErr = err
			}
		}
	})
	return s.stopErr
}

// catchFatal runs f, turning a panic raised by serverLogger.Fatal/Panic into
// an error. Other panics propagate.
func catchFatal(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(*fatalError)
			if !ok {
				panic(r)
			}
			err = fe
		}
	}()
	return f()
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
