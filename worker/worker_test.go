package worker

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/temporalconn"
	"github.com/alignflow/alignflow/workflows"
)

// recorder is a worker of one task queue that records what the pool gives
// it. It passes registrations on to a real SDK worker (never started, on a
// client that never connects), so that the SDK still rejects a workflow or
// activity it could not run.
type recorder struct {
	sdkworker.Worker
	queue      string
	opts       sdkworker.Options
	workflows  map[string]any // by registered name
	activities []any
	startErr   error
	started    int
	stopped    int
}

func (r *recorder) RegisterWorkflowWithOptions(w any, o workflow.RegisterOptions) {
	r.Worker.RegisterWorkflowWithOptions(w, o)
	r.workflows[o.Name] = w
}

func (r *recorder) RegisterActivity(a any) {
	r.Worker.RegisterActivity(a)
	r.activities = append(r.activities, a)
}

func (r *recorder) Start() error {
	r.started++
	return r.startErr
}

func (r *recorder) Stop() { r.stopped++ }

// recordWorkers has NewPool make recorders for the test, in the order it
// makes workers.
func recordWorkers(t *testing.T) *[]*recorder {
	t.Helper()
	var made []*recorder
	prev := newWorker
	t.Cleanup(func() { newWorker = prev })
	newWorker = func(c client.Client, q string, o sdkworker.Options) sdkworker.Worker {
		r := &recorder{Worker: sdkworker.New(c, q, o), queue: q, opts: o, workflows: map[string]any{}}
		made = append(made, r)
		return r
	}
	return &made
}

// lazyClient is a client that would connect on first use, which these
// tests never make.
func lazyClient(t *testing.T) client.Client {
	t.Helper()
	c, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:1", Namespace: "test"})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func openStore(t *testing.T) *artifact.Store {
	t.Helper()
	s, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	return s
}

// TestPoolQueues checks which task queues a pool serves: the ones asked
// for, "" standing for alignflow's default, and always its own queue last.
func TestPoolQueues(t *testing.T) {
	tests := []struct {
		name      string
		taskQueue string
		queues    []string
		want      []string
	}{
		{"default", "", nil, []string{workflows.TaskQueue}},
		{"the option's queue", "gpu", nil, []string{"gpu"}},
		{"queues over the option", "gpu", []string{"train", "eval"}, []string{"train", "eval"}},
		{"empty names the default", "gpu", []string{"train", "", "rollout"}, []string{"train", workflows.TaskQueue, "rollout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			made := recordWorkers(t)
			asked := slices.Clone(tt.queues)
			p := NewPool(lazyClient(t), openStore(t), Options{TaskQueue: tt.taskQueue}, tt.queues)
			assert.Equal(t, tt.want, p.Queues)
			assert.Equal(t, asked, tt.queues, "the caller's slice is left as it was")
			var got []string
			for _, w := range *made {
				got = append(got, w.queue)
			}
			assert.Equal(t, append(slices.Clone(tt.want), p.Own), got, "one worker a queue, then the own queue's")
		})
	}
}

// TestPoolOptions checks what every queue's worker is given: at most
// ConcurrentActivities activities at once on each queue (1 by default:
// training takes the machine's cores), and heartbeats sent on within the
// heartbeat interval (2 s by default).
func TestPoolOptions(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		concurrent int
		heartbeat  time.Duration
	}{
		{"defaults", Options{}, 1, 2 * time.Second},
		{"negative means default", Options{ConcurrentActivities: -3, HeartbeatInterval: -time.Second}, 1, 2 * time.Second},
		{"given", Options{ConcurrentActivities: 4, HeartbeatInterval: 250 * time.Millisecond}, 4, 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			made := recordWorkers(t)
			NewPool(lazyClient(t), openStore(t), tt.opts, []string{"train", "eval"})
			require.Len(t, *made, 3)
			for _, w := range *made {
				assert.Equal(t, tt.concurrent, w.opts.MaxConcurrentActivityExecutionSize, w.queue)
				assert.Equal(t, tt.heartbeat, w.opts.MaxHeartbeatThrottleInterval, w.queue)
				// Nothing else is set: the SDK's defaults hold.
				o := w.opts
				o.MaxConcurrentActivityExecutionSize, o.MaxHeartbeatThrottleInterval = 0, 0
				assert.Zero(t, o, w.queue)
			}
		})
	}
}

// TestPoolRegistrations checks what each queue serves: the listed queues
// both workflows under their registered names and the activities; the own
// queue the activities only (no workflow is started there), all of them
// one set, so that compiled graphs and the last update's state are shared.
func TestPoolRegistrations(t *testing.T) {
	made := recordWorkers(t)
	c := lazyClient(t)
	store := openStore(t)
	roots := config.RootsAt("/data/a", "/data/b")
	plugins := backend.Plugins{"cuda": "/opt/pjrt/cuda.so"}
	p := NewPool(c, store, Options{DataRoots: roots, XLAPlugins: plugins}, []string{"train", "eval"})
	require.Len(t, *made, 3)

	a, ok := (*made)[0].activities[0].(*activities.Activities)
	require.True(t, ok, "the activities are an *activities.Activities")
	for _, w := range *made {
		require.Len(t, w.activities, 1, w.queue)
		assert.Same(t, a, w.activities[0], "%s: one set of activities for every queue", w.queue)
		if w.queue == p.Own {
			assert.Empty(t, w.workflows, "no workflow runs on the own queue")
			continue
		}
		require.Len(t, w.workflows, 2, w.queue)
		assertSameFunc(t, workflows.Alignment, w.workflows[workflows.AlignmentName])
		assertSameFunc(t, workflows.RewardModelComparison, w.workflows[workflows.ComparisonName])
	}

	assert.Same(t, store, a.Store)
	assert.Equal(t, roots, a.DataRoots)
	assert.Equal(t, plugins, a.XLAPlugins, "the activities resolve a spec's plugin names through the worker's allow-list")
	assert.Equal(t, p.Own, a.WorkerQueue, "UpdatePolicy reports the own queue, where the pool listens")
	assert.Equal(t, temporalconn.Histories{Client: c}, a.History, "reports read histories through the pool's client")
	assert.Nil(t, a.Metrics)
	assert.Equal(t, store.Describe(), p.Store)
}

func assertSameFunc(t *testing.T, want, got any) {
	t.Helper()
	require.NotNil(t, got)
	assert.Equal(t, reflect.ValueOf(want).Pointer(), reflect.ValueOf(got).Pointer())
}

// TestOwnQueue checks the own queue's name: the host, the process and a
// random part, so that two pools (a restarted process) never share one.
func TestOwnQueue(t *testing.T) {
	recordWorkers(t)
	host, err := os.Hostname()
	require.NoError(t, err)
	want := regexp.MustCompile("^alignflow-worker-" + regexp.QuoteMeta(host) + fmt.Sprintf("-%d-", os.Getpid()) + "[0-9a-f]{8}$")
	c, store := lazyClient(t), openStore(t)
	p1 := NewPool(c, store, Options{}, nil)
	p2 := NewPool(c, store, Options{}, nil)
	assert.Regexp(t, want, p1.Own)
	assert.Regexp(t, want, p2.Own)
	assert.NotEqual(t, p1.Own, p2.Own)
	assert.NotContains(t, p1.Queues, p1.Own)
}

// TestPoolMetrics checks that with a recorder the activities log into it
// and the store's traffic shows on it.
func TestPoolMetrics(t *testing.T) {
	made := recordWorkers(t)
	rec := metrics.NewRecorder()
	store := openStore(t)
	NewPool(lazyClient(t), store, Options{Metrics: rec}, nil)
	a := (*made)[0].activities[0].(*activities.Activities)
	assert.Same(t, rec, a.Metrics)

	data := []byte("twelve bytes")
	_, err := store.Put("runs/r/x.bin", data)
	require.NoError(t, err)
	w := httptest.NewRecorder()
	rec.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	assert.Contains(t, w.Body.String(), fmt.Sprintf("alignflow_store_written_bytes_total %d\n", len(data)))
}

// TestStartStop checks that Start starts every worker, the own queue's
// included; that a failed start stops those already started and names the
// queue that failed; and that Stop stops them all.
func TestStartStop(t *testing.T) {
	tests := []struct {
		name    string
		failing int // index of the worker whose start fails; -1 none
	}{
		{"all start", -1},
		{"the first fails", 0},
		{"a listed queue fails", 1},
		{"the own queue fails", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			made := recordWorkers(t)
			p := NewPool(lazyClient(t), openStore(t), Options{}, []string{"train", "eval"})
			ws := *made
			require.Len(t, ws, 3)
			refused := errors.New("refused")
			if tt.failing >= 0 {
				ws[tt.failing].startErr = refused
			}
			err := p.Start()
			if tt.failing < 0 {
				require.NoError(t, err)
				for _, w := range ws {
					assert.Equal(t, 1, w.started, w.queue)
					assert.Zero(t, w.stopped, w.queue)
				}
				p.Stop()
				for _, w := range ws {
					assert.Equal(t, 1, w.stopped, w.queue)
				}
				return
			}
			require.ErrorIs(t, err, refused)
			assert.Contains(t, err.Error(), "task queue "+ws[tt.failing].queue+":")
			for i, w := range ws {
				assert.Equal(t, i <= tt.failing, w.started == 1, "%s started", w.queue)
				assert.Equal(t, i < tt.failing, w.stopped == 1, "%s stopped", w.queue)
			}
		})
	}
}

// TestRegister checks Register as the replayer uses it (no activities):
// the workflows only, under the names recorded histories start them by.
func TestRegister(t *testing.T) {
	r := &recorder{Worker: sdkworker.New(lazyClient(t), "replay", sdkworker.Options{}), workflows: map[string]any{}}
	Register(r, nil)
	assert.Empty(t, r.activities)
	assert.Len(t, r.workflows, 2)
	for _, file := range recordedHistories(t) {
		assert.Contains(t, r.workflows, file.workflowType, file.name)
	}
}

// TestServesRecordedActivities checks that the activity types the recorded
// histories schedule are served: all of them on the workflow's queue, and
// those pinned to a worker's own queue (a REINFORCE update, offered where
// the last one's state is in memory) on the own queue too. Renaming an
// activity method would leave a running workflow's tasks with no worker.
// The SDK names a registered struct's activities by its exported methods.
func TestServesRecordedActivities(t *testing.T) {
	made := recordWorkers(t)
	p := NewPool(lazyClient(t), openStore(t), Options{}, nil)
	served := map[string]map[string]bool{} // by queue
	for _, w := range *made {
		served[w.queue] = map[string]bool{}
		for _, a := range w.activities {
			typ := reflect.TypeOf(a)
			for i := range typ.NumMethod() {
				served[w.queue][typ.Method(i).Name] = true
			}
		}
	}
	pinned := 0
	for _, h := range recordedHistories(t) {
		require.Equal(t, workflows.TaskQueue, h.queue, h.name)
		for _, name := range h.scheduled {
			assert.True(t, served[workflows.TaskQueue][name], "%s schedules %s, which the pool does not serve", h.name, name)
		}
		for q, names := range h.pinned {
			assert.Regexp(t, `^alignflow-worker-`, q, "%s: an own queue's name", h.name)
			for _, name := range names {
				pinned++
				assert.True(t, served[p.Own][name], "%s pins %s to a worker's own queue, which does not serve it", h.name, name)
			}
		}
	}
	assert.Positive(t, pinned, "some recorded update is pinned")
}

// recorded is what a recorded history asks of workers.
type recorded struct {
	name         string
	workflowType string
	queue        string              // the workflow's task queue
	scheduled    []string            // activity types, once each
	pinned       map[string][]string // activity types scheduled on other queues, by queue
}

func recordedHistories(t *testing.T) []recorded {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "workflows", "testdata", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var out []recorded
	for _, file := range files {
		f, err := os.Open(file)
		require.NoError(t, err)
		h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
		f.Close()
		require.NoError(t, err)
		r := recorded{name: filepath.Base(file), pinned: map[string][]string{}}
		for _, e := range h.Events {
			switch e.GetEventType() {
			case enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
				a := e.GetWorkflowExecutionStartedEventAttributes()
				r.workflowType, r.queue = a.GetWorkflowType().GetName(), a.GetTaskQueue().GetName()
			case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
				a := e.GetActivityTaskScheduledEventAttributes()
				name, q := a.GetActivityType().GetName(), a.GetTaskQueue().GetName()
				if !slices.Contains(r.scheduled, name) {
					r.scheduled = append(r.scheduled, name)
				}
				if q != r.queue && !slices.Contains(r.pinned[q], name) {
					r.pinned[q] = append(r.pinned[q], name)
				}
			}
		}
		out = append(out, r)
	}
	return out
}
