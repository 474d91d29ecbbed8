package devserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enums "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

const testTaskQueue = "devserver-test"

var (
	saRun  = temporal.NewSearchAttributeKeyKeyword("AlignflowTestRun")
	saStep = temporal.NewSearchAttributeKeyInt64("AlignflowTestStep")
	saLoss = temporal.NewSearchAttributeKeyFloat64("AlignflowTestLoss")

	testSearchAttributes = map[string]enums.IndexedValueType{
		saRun.GetName():  enums.INDEXED_VALUE_TYPE_KEYWORD,
		saStep.GetName(): enums.INDEXED_VALUE_TYPE_INT,
		saLoss.GetName(): enums.INDEXED_VALUE_TYPE_DOUBLE,
	}
)

// testLogger writes warnings and errors to stderr (not t.Log: the server may
// log from its goroutines after a test function returns).
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startGreeter runs a worker of the Greet workflow and activity on c.
func startGreeter(t *testing.T, c client.Client) worker.Worker {
	t.Helper()
	w := worker.New(c, testTaskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(greetWorkflow, workflow.RegisterOptions{Name: "Greet"})
	w.RegisterActivityWithOptions(greet, activity.RegisterOptions{Name: "Greet"})
	require.NoError(t, w.Start())
	return w
}

func greet(_ context.Context, name string) (string, error) {
	return "hello " + name, nil
}

func greetWorkflow(ctx workflow.Context, name string) (string, error) {
	if err := workflow.UpsertTypedSearchAttributes(ctx,
		saRun.ValueSet("run-"+name),
		saStep.ValueSet(3),
		saLoss.ValueSet(0.25),
	); err != nil {
		return "", err
	}
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	var out string
	err := workflow.ExecuteActivity(ctx, "Greet", name).Get(ctx, &out)
	return out, err
}

func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	s, err := Start(ctx, opts)
	require.NoError(t, err)
	t.Logf("Start: %v (frontend %s, namespace %s)", time.Since(begin).Round(time.Millisecond), s.FrontendHostPort(), s.Namespace())
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

func stopServer(t *testing.T, s *Server) {
	t.Helper()
	begin := time.Now()
	require.NoError(t, s.Stop())
	t.Logf("Stop: %v", time.Since(begin).Round(time.Millisecond))
}

func dial(t *testing.T, s *Server) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{
		HostPort:  s.FrontendHostPort(),
		Namespace: s.Namespace(),
		Logger:    sdklog.NewStructuredLogger(testLogger()),
	})
	require.NoError(t, err)
	return c
}

func TestPersistentServer(t *testing.T) {
	// A missing parent directory must be created.
	dbFile := filepath.Join(t.TempDir(), "state", "temporal.db")
	const ns = "alignflow-test"

	// First run: fresh file, custom search attributes, one workflow.
	s := startServer(t, Options{
		DBFile:           dbFile,
		Namespace:        ns,
		SearchAttributes: testSearchAttributes,
		Logger:           testLogger(),
	})
	require.Equal(t, ns, s.Namespace())
	require.True(t, strings.HasPrefix(s.FrontendHostPort(), "127.0.0.1:"), s.FrontendHostPort())
	require.FileExists(t, dbFile)
	require.FileExists(t, dbFile+".lock")
	require.FileExists(t, dbFile+"-wal", "journal_mode=wal is applied")

	c := dial(t, s)
	w := startGreeter(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        "devserver-test-greet",
		TaskQueue: testTaskQueue,
	}, "Greet", "alignflow")
	require.NoError(t, err)
	var got string
	require.NoError(t, run.Get(ctx, &got))
	t.Logf("workflow round trip: %v", time.Since(begin).Round(time.Millisecond))
	require.Equal(t, "hello alignflow", got)
	checkSearchAttributes(t, c, run.GetID(), run.GetRunID())

	w.Stop()
	c.Close()
	stopServer(t, s)

	// Second run on the same file, without asking for the search attributes:
	// the namespace, the completed workflow and the registered search
	// attributes must all have survived.
	s = startServer(t, Options{DBFile: dbFile, Namespace: ns, Logger: testLogger()})
	c = dial(t, s)
	defer c.Close()

	desc, err := c.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
	require.NoError(t, err)
	require.Equal(t, enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, desc.GetWorkflowExecutionInfo().GetStatus())
	checkSearchAttributes(t, c, run.GetID(), run.GetRunID())

	sas, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: ns})
	require.NoError(t, err)
	for name, typ := range testSearchAttributes {
		require.Equal(t, typ, sas.GetCustomAttributes()[name], "search attribute %s", name)
	}

	// Visibility (the SQLite visibility store) answers queries on them.
	query := `AlignflowTestRun = "run-alignflow" AND AlignflowTestStep = 3 AND AlignflowTestLoss < 0.5`
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query})
		require.NoError(ct, err)
		require.Len(ct, resp.GetExecutions(), 1)
	}, 10*time.Second, 50*time.Millisecond)

	// Asking again for the same attributes is a no-op; a type change is refused.
	require.NoError(t, EnsureSearchAttributes(ctx, c.OperatorService(), ns, testSearchAttributes))
	err = EnsureSearchAttributes(ctx, c.OperatorService(), ns, map[string]enums.IndexedValueType{
		saStep.GetName(): enums.INDEXED_VALUE_TYPE_KEYWORD,
	})
	require.ErrorContains(t, err, "is registered in namespace")

	// An attribute missing from an existing namespace is added.
	extra := map[string]enums.IndexedValueType{"AlignflowTestExtra": enums.INDEXED_VALUE_TYPE_KEYWORD}
	require.NoError(t, EnsureSearchAttributes(ctx, c.OperatorService(), ns, extra))
	sas, err = c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: ns})
	require.NoError(t, err)
	require.Equal(t, enums.INDEXED_VALUE_TYPE_KEYWORD, sas.GetCustomAttributes()["AlignflowTestExtra"])

	stopServer(t, s)
	require.NoError(t, s.Stop(), "Stop is idempotent")

	// A new process on the file (the server's SQLite connection pool is
	// process-wide, so this is the real proof of what is on disk).
	out := runHelper(t, "describe", dbFile, ns, run.GetID(), run.GetRunID())
	require.Contains(t, out, "HELPER OK")
}

// runHelper runs TestHelperProcess in a child process and returns its output.
func runHelper(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "DEVSERVER_HELPER="+strings.Join(args, "\x1f"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "helper output:\n%s", out)
	t.Logf("helper %s:\n%s", args[0], out)
	return string(out)
}

// TestHelperProcess is run by runHelper in a child process; it is skipped
// otherwise.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv("DEVSERVER_HELPER")
	if spec == "" {
		t.Skip("helper process for other tests")
	}
	args := strings.Split(spec, "\x1f")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	switch args[0] {
	case "describe": // describe DBFILE NAMESPACE WORKFLOW-ID RUN-ID
		s := startServer(t, Options{DBFile: args[1], Namespace: args[2], Logger: testLogger()})
		c := dial(t, s)
		defer c.Close()
		desc, err := c.DescribeWorkflowExecution(ctx, args[3], args[4])
		require.NoError(t, err)
		require.Equal(t, enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, desc.GetWorkflowExecutionInfo().GetStatus())
		checkSearchAttributes(t, c, args[3], args[4])
		sas, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: args[2]})
		require.NoError(t, err)
		for name, typ := range testSearchAttributes {
			require.Equal(t, typ, sas.GetCustomAttributes()[name], "search attribute %s", name)
		}
		stopServer(t, s)
	case "locked": // locked DBFILE: Start must fail with the lock error.
		_, err := Start(ctx, Options{DBFile: args[1], Logger: testLogger()})
		var locked *DBLockedError
		require.ErrorAs(t, err, &locked)
		require.Equal(t, os.Getppid(), locked.PID)
		fmt.Println(err)
	default:
		t.Fatalf("unknown helper command %q", args[0])
	}
	fmt.Println("HELPER OK")
}

// checkSearchAttributes checks the search attributes the workflow upserted.
func checkSearchAttributes(t *testing.T, c client.Client, id, runID string) {
	t.Helper()
	desc, err := c.DescribeWorkflowExecution(context.Background(), id, runID)
	require.NoError(t, err)
	fields := desc.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()
	dc := converter.GetDefaultDataConverter()
	var run string
	var step int64
	var loss float64
	require.NoError(t, dc.FromPayload(fields[saRun.GetName()], &run))
	require.NoError(t, dc.FromPayload(fields[saStep.GetName()], &step))
	require.NoError(t, dc.FromPayload(fields[saLoss.GetName()], &loss))
	require.Equal(t, "run-alignflow", run)
	require.Equal(t, int64(3), step)
	require.Equal(t, 0.25, loss)
}

func TestConflicts(t *testing.T) {
	dir := t.TempDir()
	dbFile := filepath.Join(dir, "temporal.db")
	s := startServer(t, Options{DBFile: dbFile, Logger: testLogger()})
	_, portStr, _ := strings.Cut(s.FrontendHostPort(), ":")
	port, err := strconv.Atoi(portStr)
	require.NoError(t, err)

	t.Run("port in use", func(t *testing.T) {
		otherDB := filepath.Join(dir, "other.db")
		_, err := Start(context.Background(), Options{DBFile: otherDB, Port: port, Logger: testLogger()})
		require.Error(t, err)
		require.ErrorIs(t, err, ErrPortInUse)
		require.EqualError(t, err, "port "+portStr+` on 127.0.0.1 is already in use (is another Temporal server or "alignflow dev" running? choose another with --port)`)

		// The failed start released its lock and created no database.
		lock, err := acquireLock(otherDB)
		require.NoError(t, err)
		require.NoError(t, lock.release())
		require.NoFileExists(t, otherDB)

		// In-memory servers check the port too.
		_, err = Start(context.Background(), Options{Port: port, Logger: testLogger()})
		require.ErrorIs(t, err, ErrPortInUse)
	})

	t.Run("database locked", func(t *testing.T) {
		_, err := Start(context.Background(), Options{DBFile: dbFile, Logger: testLogger()})
		require.Error(t, err)
		require.ErrorIs(t, err, ErrDBLocked)
		var locked *DBLockedError
		require.True(t, errors.As(err, &locked))
		require.Equal(t, os.Getpid(), locked.PID)
		require.ErrorContains(t, err, "database file "+dbFile+" is already in use")

		// The same from another process.
		out := runHelper(t, "locked", dbFile)
		require.Contains(t, out, "HELPER OK")
		require.Contains(t, out, fmt.Sprintf("is already in use by process %d", os.Getpid()))
	})

	stopServer(t, s)
}

func TestInMemoryServer(t *testing.T) {
	s := startServer(t, Options{Logger: testLogger()})
	require.Equal(t, DefaultNamespace, s.Namespace())
	c := dial(t, s)
	defer c.Close()
	resp, err := c.WorkflowService().DescribeNamespace(context.Background(), &workflowservice.DescribeNamespaceRequest{Namespace: DefaultNamespace})
	require.NoError(t, err)
	require.Equal(t, DefaultRetention, resp.GetConfig().GetWorkflowExecutionRetentionTtl().AsDuration())
	stopServer(t, s)
}

// A port taken between the check and the server's bind must give an error,
// not the server's logger.Fatal (which would exit the process).
func TestBusyInternalPortIsAnError(t *testing.T) {
	opts, err := Options{Logger: testLogger()}.withDefaults()
	require.NoError(t, err)
	p, err := allocatePorts(opts.IP, 0)
	require.NoError(t, err)
	l, err := net.Listen("tcp", hostPort(loopback, p.history))
	require.NoError(t, err)
	defer l.Close()

	_, err = start(context.Background(), opts, p, newServerLogger(opts.Logger, opts.LogLevel), nil)
	require.Error(t, err)
	require.ErrorIs(t, err, syscall.EADDRINUSE)
	t.Log(err)
}

// TestWebUI serves the Temporal Web UI for an embedded server: the page and
// the API it calls (which reads from the server) answer, and a taken port is
// an error instead of an exit.
func TestWebUI(t *testing.T) {
	srv, err := Start(context.Background(), Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ui, err := StartUI(ctx, "", port, srv.FrontendHostPort(), "default")
	require.NoError(t, err)
	defer ui.Stop()
	get := func(path string) (int, string) {
		resp, err := http.Get(ui.URL() + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	code, body := get("/namespaces/default/workflows")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "<html")
	code, body = get("/api/v1/namespaces/default")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "NAMESPACE_STATE_REGISTERED", "the UI reads the namespace from the server")

	_, err = StartUI(ctx, "", port, srv.FrontendHostPort(), "default")
	assert.ErrorIs(t, err, ErrPortInUse, "a taken port is reported, not fatal")
}
