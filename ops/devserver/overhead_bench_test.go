package devserver

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// chainWorkflow runs n no-op activities one after another, as alignflow's
// workflows run their stages.
func chainWorkflow(ctx workflow.Context, n int) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	for i := 0; i < n; i++ {
		if err := workflow.ExecuteActivity(ctx, "Noop", i).Get(ctx, nil); err != nil {
			return err
		}
	}
	return nil
}

func noop(context.Context, int) error { return nil }

// BenchmarkActivityRoundTrip measures what Temporal adds to each activity
// on the embedded server (in memory, worker in the same process): schedule,
// dispatch, completion and the workflow task that schedules the next one.
// alignflow's activities take seconds to minutes, so this is the per-stage
// overhead; `alignflow runs show` reports the whole run's share.
func BenchmarkActivityRoundTrip(b *testing.B) {
	srv, err := Start(context.Background(), Options{Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	c, err := client.Dial(client.Options{HostPort: srv.FrontendHostPort(), Logger: sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	w := worker.New(c, "bench", worker.Options{})
	w.RegisterWorkflowWithOptions(chainWorkflow, workflow.RegisterOptions{Name: "Chain"})
	w.RegisterActivityWithOptions(noop, activity.RegisterOptions{Name: "Noop"})
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	run := func(n int) {
		r, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{TaskQueue: "bench"}, "Chain", n)
		if err == nil {
			err = r.Get(context.Background(), nil)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	run(5) // warm up
	b.ResetTimer()
	run(b.N)
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/activity")
}
