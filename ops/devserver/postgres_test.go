package devserver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/alignflow/alignflow/internal/pgtest"
)

// TestPostgresServer persists the server in a real PostgreSQL: it creates
// the databases and schemas, runs a workflow, and after a restart on the
// same databases still has the namespace, the search attributes and the
// finished workflow.
func TestPostgresServer(t *testing.T) {
	pg := pgtest.Start(t)
	opts := Options{Namespace: "pg-test", SearchAttributes: testSearchAttributes, Logger: testLogger(),
		Postgres: &Postgres{Addr: pg.Addr, User: pgtest.User}}
	s := startServer(t, opts)
	c := dial(t, s)
	w := startGreeter(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "pg-greet", TaskQueue: testTaskQueue}, "Greet", "postgres")
	require.NoError(t, err)
	var got string
	require.NoError(t, run.Get(ctx, &got))
	w.Stop()
	c.Close()
	stopServer(t, s)

	s = startServer(t, opts)
	c = dial(t, s)
	defer c.Close()
	desc, err := c.DescribeWorkflowExecution(ctx, "pg-greet", "")
	require.NoError(t, err, "the finished workflow survived the restart")
	require.Equal(t, enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, desc.GetWorkflowExecutionInfo().GetStatus())
	require.Equal(t, "hello postgres", got)
}
