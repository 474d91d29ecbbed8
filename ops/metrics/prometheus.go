package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
)

// Labels every alignflow_ series has. They are bounded: a worker sees a
// few runs, each with a handful of stages, recipes and phases; no prompt
// or response ever becomes a label.
var labels = []string{"workflow_id", "stage", "recipe", "phase"}

// gauges maps the metric keys of points to the Prometheus gauges that show
// them. Keys not listed here are in the log only.
var gauges = map[string]struct{ name, help string }{
	"loss":                   {"alignflow_train_loss", "training loss of the latest step"},
	"tokens_per_second":      {"alignflow_tokens_per_second", "tokens processed per second in the latest step or iteration"},
	"checkpoint_age_seconds": {"alignflow_checkpoint_age_seconds", "seconds since the training phase last saved a checkpoint (or started)"},
	"reward_mean":            {"alignflow_reinforce_reward_mean", "mean reward-model score of the latest iteration's rollouts"},
	"kl":                     {"alignflow_reinforce_kl", "mean per-token KL penalty (reinforce.kl_estimator) of the latest iteration's rollouts"},
	"gold_mean":              {"alignflow_reinforce_gold_mean", "mean gold-rubric score of the latest iteration's rollouts"},
	"mean_length":            {"alignflow_reinforce_mean_length", "mean response length in tokens of the latest iteration's rollouts"},
	"eos_fraction":           {"alignflow_reinforce_eos_fraction", "fraction of the latest iteration's rollouts that ended with EOS"},
	"policy_loss":            {"alignflow_reinforce_loss", "REINFORCE loss of the latest iteration's update"},
	"heldout_accuracy":       {"alignflow_reward_model_heldout_accuracy", "reward model's accuracy on held-out preference pairs"},
	"gold_score":             {"alignflow_eval_gold_score", "mean gold-rubric score of a policy evaluation"},
	"reward":                 {"alignflow_eval_reward", "mean reward-model score of a policy evaluation"},
}

// Recorder holds alignflow's Prometheus series and the registry that
// serves them with the Temporal SDK's and the Go runtime's. A nil
// *Recorder records nothing, so code that logs points need not check.
//
// A run's series go when it ends (Forget, from the activity that ends it),
// and a worker keeps those of its MaxRuns most recently observed runs at
// most, so that a run that failed, or ended on another worker, does not
// keep its series here forever.
type Recorder struct {
	reg          *prometheus.Registry
	step         *prometheus.GaugeVec
	gauges       map[string]*prometheus.GaugeVec
	bytesRead    prometheus.Counter
	bytesWritten prometheus.Counter

	// MaxRuns bounds the runs whose series are kept (DefaultMaxRuns when
	// 0 or less).
	MaxRuns int
	mu      sync.Mutex
	runs    []string // workflow IDs with series, the least recently observed first
}

// DefaultMaxRuns is how many runs' series a worker keeps at most: more
// than run on one worker at once.
const DefaultMaxRuns = 64

// NewRecorder makes a registry with alignflow's series and the Go and
// process collectors.
func NewRecorder() *Recorder {
	r := &Recorder{reg: prometheus.NewRegistry(), gauges: map[string]*prometheus.GaugeVec{}}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.step = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "alignflow_step",
		Help: "latest logged step of a stage: a training step, or the REINFORCE iteration (1-based)"}, labels)
	r.reg.MustRegister(r.step)
	for key, g := range gauges {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: g.name, Help: g.help}, labels)
		r.reg.MustRegister(v)
		r.gauges[key] = v
	}
	r.bytesRead = prometheus.NewCounter(prometheus.CounterOpts{Name: "alignflow_store_read_bytes_total",
		Help: "bytes read from the artifact store (or its cache)"})
	r.bytesWritten = prometheus.NewCounter(prometheus.CounterOpts{Name: "alignflow_store_written_bytes_total",
		Help: "bytes written to the artifact store"})
	r.reg.MustRegister(r.bytesRead, r.bytesWritten)
	return r
}

// Observe shows a point of the run's log.
func (r *Recorder) Observe(runID string, p Point) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock() // so that a Forget cannot come between the series' update and their count
	r.runs = append(slices.DeleteFunc(r.runs, func(id string) bool { return id == runID }), runID)
	limit := r.MaxRuns
	if limit <= 0 {
		limit = DefaultMaxRuns
	}
	for len(r.runs) > limit {
		r.drop(r.runs[0])
		r.runs = r.runs[1:]
	}
	l := prometheus.Labels{"workflow_id": runID, "stage": p.Stage, "recipe": p.Recipe, "phase": p.Phase}
	r.step.With(l).Set(float64(p.Step))
	for k, v := range p.Metrics {
		if g, ok := r.gauges[k]; ok {
			g.With(l).Set(v)
		}
	}
}

// Forget drops the series of run runID: it ended.
func (r *Recorder) Forget(runID string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drop(runID)
	r.runs = slices.DeleteFunc(r.runs, func(id string) bool { return id == runID })
}

// drop deletes every series labelled with run runID.
func (r *Recorder) drop(runID string) {
	l := prometheus.Labels{"workflow_id": runID}
	r.step.DeletePartialMatch(l)
	for _, g := range r.gauges {
		g.DeletePartialMatch(l)
	}
}

// StoreBytes counts bytes moved by the artifact store (artifact.Counter).
func (r *Recorder) StoreBytes(read bool, n int64) {
	if r == nil || n <= 0 {
		return
	}
	if read {
		r.bytesRead.Add(float64(n))
	} else {
		r.bytesWritten.Add(float64(n))
	}
}

// SDKHandler is a Temporal SDK metrics handler that reports into the
// recorder's registry through OpenTelemetry (the SDK's contrib
// integration): temporal_request_total, temporal_activity_execution_latency_seconds
// and the rest of the SDK's temporal_ series.
func (r *Recorder) SDKHandler() (client.MetricsHandler, error) {
	exp, err := otelprom.New(otelprom.WithRegisterer(r.reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	// Latencies run from milliseconds (a poll) to hours (a training stage);
	// OpenTelemetry's default buckets are for milliseconds.
	buckets := sdkmetric.NewView(sdkmetric.Instrument{Kind: sdkmetric.InstrumentKindHistogram},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{
			Boundaries: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200}}})
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithView(buckets))
	return temporalotel.NewMetricsHandler(temporalotel.MetricsHandlerOptions{Meter: mp.Meter("temporal-sdk-go"),
		UseMonotonicCounters: true}), nil // counters, as Prometheus expects (temporal_request_total)
}

// Handler serves the registry in Prometheus' text format.
func (r *Recorder) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// Server serves /metrics.
type Server struct {
	srv *http.Server
	// Addr is where it listens (the port chosen when the address said 0).
	Addr string
}

// Serve listens on addr (HOST:PORT) and serves the recorder on /metrics
// until Close.
func (r *Recorder) Serve(addr string) (*Server, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("--metrics-addr %q: want HOST:PORT, e.g. 127.0.0.1:9464 (loopback: only this machine can scrape it): %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.Handler())
	s := &Server{srv: newHTTPServer(mux), Addr: ln.Addr().String()}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Printf("metrics server on %s stopped: %v\n", s.Addr, err)
		}
	}()
	return s, nil
}

// newHTTPServer serves h with every wait bounded: a scraper that sends
// its request slowly, reads its answer slowly or keeps an idle connection
// open is cut off, so connections cannot pile up on a worker.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 1 << 16}
}

// Close stops serving.
func (s *Server) Close() error { return s.srv.Close() }
