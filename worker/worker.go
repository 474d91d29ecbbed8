// Package worker wires alignflow's workflows and activities into a Temporal
// worker.
package worker

import (
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/workflows"
)

// Options configure a worker.
type Options struct {
	TaskQueue string
	// ConcurrentActivities bounds how many activities run at once. Training
	// saturates the machine's cores, so the default is 1.
	ConcurrentActivities int
	// HeartbeatInterval is the most time the SDK holds back an activity's
	// latest heartbeat: the freshness of the progress `runs show` prints and
	// of the checkpoint a retry resumes from. Default 2 s.
	HeartbeatInterval time.Duration
	// DataRoots confine the files a run's spec may name; empty for none.
	DataRoots []string
}

// DefaultHeartbeatInterval bounds how stale a running activity's progress is
// on the server.
const DefaultHeartbeatInterval = 2 * time.Second

// New returns a worker (not yet started) that runs alignflow's workflows and
// activities, keeping artifacts in store.
func New(c client.Client, store *artifact.Store, opts Options) worker.Worker {
	if opts.TaskQueue == "" {
		opts.TaskQueue = workflows.TaskQueue
	}
	if opts.ConcurrentActivities <= 0 {
		opts.ConcurrentActivities = 1
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = DefaultHeartbeatInterval
	}
	w := worker.New(c, opts.TaskQueue, worker.Options{
		MaxConcurrentActivityExecutionSize: opts.ConcurrentActivities,
		// Heartbeats carry the step counts progress bars show; the SDK would
		// otherwise hold them back for up to 80% of the heartbeat timeout.
		MaxHeartbeatThrottleInterval: opts.HeartbeatInterval,
	})
	a := activities.New(store)
	a.DataRoots = opts.DataRoots
	Register(w, a)
	return w
}

// Register adds the workflows and the given activities to a worker or replayer.
func Register(r worker.Registry, a *activities.Activities) {
	r.RegisterWorkflowWithOptions(workflows.Alignment, workflow.RegisterOptions{Name: workflows.AlignmentName})
	r.RegisterWorkflowWithOptions(workflows.RewardModelComparison, workflow.RegisterOptions{Name: workflows.ComparisonName})
	if a != nil {
		r.RegisterActivity(a)
	}
}
