package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
)

func scrape(t *testing.T, r *Recorder) string {
	t.Helper()
	srv, err := r.Serve("127.0.0.1:0")
	require.NoError(t, err)
	defer srv.Close()
	resp, err := http.Get("http://" + srv.Addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func TestRecorderServesAlignflowAndSDKSeries(t *testing.T) {
	r := NewRecorder()
	h, err := r.SDKHandler()
	require.NoError(t, err)
	// What the SDK's client does on every request and activity.
	h.WithTags(map[string]string{"operation": "PollActivityTaskQueue"}).Counter("temporal_request").Inc(3)
	h.Timer("temporal_activity_execution_latency").Record(1500 * time.Millisecond)
	r.Observe("run-1", Point{Series: Series{Stage: "reinforce", Recipe: "bt"}, Step: 4, Metrics: map[string]float64{"reward_mean": 0.25, "kl": 0.01, "not_a_gauge": 9}})
	r.StoreBytes(false, 1000)
	r.StoreBytes(true, 250)
	body := scrape(t, r)
	assert.Contains(t, body, `temporal_request_total{operation="PollActivityTaskQueue"} 3`)
	assert.Contains(t, body, `temporal_activity_execution_latency_seconds_count 1`)
	assert.Contains(t, body, `alignflow_reinforce_reward_mean{phase="",recipe="bt",stage="reinforce",workflow_id="run-1"} 0.25`)
	assert.Contains(t, body, `alignflow_step{phase="",recipe="bt",stage="reinforce",workflow_id="run-1"} 4`)
	assert.Contains(t, body, "alignflow_store_written_bytes_total 1000")
	assert.Contains(t, body, "alignflow_store_read_bytes_total 250")
	assert.NotContains(t, body, "not_a_gauge")

	var nilRec *Recorder
	nilRec.Observe("x", Point{}) // a worker without --metrics-addr
	nilRec.StoreBytes(true, 1)
}

func TestServeNamesABadAddress(t *testing.T) {
	_, err := NewRecorder().Serve("9090")
	require.ErrorContains(t, err, `--metrics-addr "9090": want HOST:PORT`)
}

func TestLogSegmentsAssembleInOrder(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	sft := NewLog(store, nil, "r", Series{Stage: "sft"})
	sft.Add(1, map[string]float64{"loss": 2})
	sft.Add(2, map[string]float64{"loss": math.NaN(), "lr": 0.1})
	require.NoError(t, sft.Flush())
	require.NoError(t, sft.Flush(), "nothing pending: nothing written")
	rm := NewLog(store, nil, "r", Series{Stage: "reward-model", Recipe: "bt", Phase: "bt"})
	rm.Add(1, map[string]float64{"loss": 0.7})
	require.NoError(t, rm.Flush())
	sft.Add(3, map[string]float64{"loss": 1})
	require.NoError(t, sft.Flush())

	pts, where, err := Assemble(store, "r")
	require.NoError(t, err)
	require.Len(t, pts, 4)
	assert.Equal(t, []int{1, 2, 1, 3}, []int{pts[0].Step, pts[1].Step, pts[2].Step, pts[3].Step}, "time order")
	assert.Equal(t, map[string]float64{"lr": 0.1}, pts[1].Metrics, "NaN left out")
	assert.Equal(t, "reward-model bt", pts[2].Series.String())
	assert.Len(t, Of(pts, Series{Stage: "sft"}), 3)
	assert.Equal(t, []Series{{Stage: "sft"}}, SeriesOf(pts, "sft"))
	assert.FileExists(t, where)

	_, err = store.PutRecord("runs/r/metrics/sft/bad.jsonl", []byte("{\"stage\":\"sft\",\"step\":1}\nnot json\n"))
	require.NoError(t, err)
	_, err = Collect(store, "r")
	require.ErrorContains(t, err, "bad.jsonl:2:")
}

// TestRunSeriesGoWhenRunsEnd: a run's series go when it ends (Forget);
// without that, a worker that saw 2,000 runs served 8,000 series. A run
// that never tells its end (failed, or ended on another worker) goes once
// MaxRuns newer runs were observed.
func TestRunSeriesGoWhenRunsEnd(t *testing.T) {
	r := NewRecorder()
	r.MaxRuns = 3
	point := Point{Series: Series{Stage: "sft"}, Step: 1, Metrics: map[string]float64{"loss": 1}}
	for _, id := range []string{"run-1", "run-2", "run-3"} {
		r.Observe(id, point)
	}
	r.Forget("run-2")
	body := scrape(t, r)
	assert.Contains(t, body, `workflow_id="run-1"`)
	assert.NotContains(t, body, `workflow_id="run-2"`, "an ended run's series go")
	for i := 4; i <= 2000; i++ {
		r.Observe(fmt.Sprintf("run-%d", i), point)
	}
	body = scrape(t, r)
	assert.Equal(t, 3, strings.Count(body, "alignflow_train_loss{"), "the series of the last MaxRuns runs only")
	assert.Contains(t, body, `workflow_id="run-2000"`)
	assert.NotContains(t, body, `workflow_id="run-1"`)
	var nilRec *Recorder
	nilRec.Forget("x")
}

// TestMetricsServerBoundsItsConnections: idle keep-alive connections, slow
// requests and slow readers are cut off (an idle connection was kept
// forever), and a malformed address is answered with a loopback example.
func TestMetricsServerBoundsItsConnections(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler())
	assert.Positive(t, srv.IdleTimeout)
	assert.Positive(t, srv.WriteTimeout)
	assert.Positive(t, srv.ReadTimeout)
	assert.Positive(t, srv.ReadHeaderTimeout)
	_, err := NewRecorder().Serve("9464")
	require.ErrorContains(t, err, "e.g. 127.0.0.1:9464 (loopback")
	assert.NotContains(t, err.Error(), " :9090", "no example that listens on every interface")
}
