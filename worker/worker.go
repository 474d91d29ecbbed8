// Package worker wires alignflow's workflows and activities into a Temporal
// worker.
package worker

import (
	"fmt"
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
	// ConcurrentActivities bounds how many activities run at once on each
	// task queue. Training saturates the machine's cores, so the default is 1.
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
	return NewPool(c, store, opts, nil).workers[0]
}

// Pool is one process's workers on several task queues. They share one
// set of activities, so compiled graphs are shared. Each queue runs at most
// ConcurrentActivities activities at once: a budget shared by all queues
// would starve them, because the SDK holds an activity slot while a poller
// waits for a task (up to a minute) on its queue.
type Pool struct {
	Queues []string
	// Store names the artifact store the activities use.
	Store   string
	workers []worker.Worker
}

// NewPool returns workers (not yet started) on queues, or on
// opts.TaskQueue when queues is empty.
func NewPool(c client.Client, store *artifact.Store, opts Options, queues []string) *Pool {
	if len(queues) == 0 {
		queues = []string{opts.TaskQueue}
	}
	queues = append([]string(nil), queues...)
	for i, q := range queues {
		if q == "" {
			queues[i] = workflows.TaskQueue
		}
	}
	if opts.ConcurrentActivities <= 0 {
		opts.ConcurrentActivities = 1
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = DefaultHeartbeatInterval
	}
	a := activities.New(store)
	a.DataRoots = opts.DataRoots
	p := &Pool{Queues: queues, Store: store.Describe()}
	for _, q := range queues {
		w := worker.New(c, q, worker.Options{
			MaxConcurrentActivityExecutionSize: opts.ConcurrentActivities,
			// Heartbeats carry the step counts progress bars show; the SDK would
			// otherwise hold them back for up to 80% of the heartbeat timeout.
			MaxHeartbeatThrottleInterval: opts.HeartbeatInterval,
		})
		Register(w, a)
		p.workers = append(p.workers, w)
	}
	return p
}

// Start starts every worker; on an error the started ones are stopped.
func (p *Pool) Start() error {
	for i, w := range p.workers {
		if err := w.Start(); err != nil {
			for _, s := range p.workers[:i] {
				s.Stop()
			}
			return fmt.Errorf("start worker on task queue %s: %w", p.Queues[i], err)
		}
	}
	return nil
}

// Stop stops every worker.
func (p *Pool) Stop() {
	for _, w := range p.workers {
		w.Stop()
	}
}

// Register adds the workflows and the given activities to a worker or replayer.
func Register(r worker.Registry, a *activities.Activities) {
	r.RegisterWorkflowWithOptions(workflows.Alignment, workflow.RegisterOptions{Name: workflows.AlignmentName})
	r.RegisterWorkflowWithOptions(workflows.RewardModelComparison, workflow.RegisterOptions{Name: workflows.ComparisonName})
	if a != nil {
		r.RegisterActivity(a)
	}
}
