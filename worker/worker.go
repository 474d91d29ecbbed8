// Package worker wires alignflow's workflows and activities into a Temporal
// worker.
package worker

import (
	"fmt"
	"os"
	"slices"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/google/uuid"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/temporalconn"
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
	// DataRoots are the files a run may make the worker read (the zero
	// Roots: none; config.Connection.Roots decides a worker's from
	// --data-root and the server's address).
	DataRoots config.Roots
	// XLAPlugins are the XLA plugins a run's spec may name by "xla:NAME"
	// (--xla-plugin); nil for none.
	XLAPlugins backend.Plugins
	// Metrics shows the activities' metrics and the store's traffic on
	// Prometheus (nil: none). The client's SDK metrics are the client's.
	Metrics *metrics.Recorder
}

// DefaultHeartbeatInterval bounds how stale a running activity's progress is
// on the server.
const DefaultHeartbeatInterval = 2 * time.Second

// New returns a worker (not yet started) on opts.TaskQueue that runs
// alignflow's workflows and activities, keeping artifacts in store.
func New(c client.Client, store *artifact.Store, opts Options) *Pool {
	return NewPool(c, store, opts, nil)
}

// Pool is one process's workers on several task queues. They share one
// set of activities, so compiled graphs are shared. Each queue runs at most
// ConcurrentActivities activities at once: a budget shared by all queues
// would starve them, because the SDK holds an activity slot while a poller
// waits for a task (up to a minute) on its queue.
type Pool struct {
	Queues []string
	// Store names the artifact store the activities use.
	Store string
	// Own is the process's own task queue.
	Own     string
	workers []worker.Worker
}

// newWorker makes the worker of one task queue; a test replaces it to see
// what each queue is given.
var newWorker = worker.New

// ownQueue names a worker process's own task queue: host, process and a
// random part, so that a restarted process never inherits its tasks.
func ownQueue() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("alignflow-worker-%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
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
	a.XLAPlugins = opts.XLAPlugins
	a.History = temporalconn.Histories{Client: c}
	if opts.Metrics != nil {
		a.Metrics = opts.Metrics
		store.CountBytes(opts.Metrics.StoreBytes)
	}
	// The process's own queue: a run offers its next REINFORCE update here
	// first, where the last one's policy and optimizer state are in memory.
	a.WorkerQueue = ownQueue()
	p := &Pool{Queues: queues, Store: store.Describe(), Own: a.WorkerQueue}
	for _, q := range append(queues, a.WorkerQueue) {
		w := newWorker(c, q, worker.Options{
			MaxConcurrentActivityExecutionSize: opts.ConcurrentActivities,
			// Heartbeats carry the step counts progress bars show; the SDK would
			// otherwise hold them back for up to 80% of the heartbeat timeout.
			MaxHeartbeatThrottleInterval: opts.HeartbeatInterval,
		})
		if q == a.WorkerQueue {
			w.RegisterActivity(a) // activities only: no workflow starts on it
		} else {
			Register(w, a)
		}
		p.workers = append(p.workers, w)
	}
	return p
}

// Start starts every worker; on an error the started ones are stopped.
func (p *Pool) Start() error {
	queues := append(slices.Clip(p.Queues), p.Own) // of each worker, in order
	for i, w := range p.workers {
		if err := w.Start(); err != nil {
			for _, s := range p.workers[:i] {
				s.Stop()
			}
			return fmt.Errorf("start worker on task queue %s: %w", queues[i], err)
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
