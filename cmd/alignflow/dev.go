package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/worker"
	"github.com/alignflow/alignflow/workflows"
)

// dbFile is where the embedded server keeps its history, inside the data dir.
func dbFile(dataDir string) string { return filepath.Join(dataDir, "temporal.db") }

// startEmbedded starts the in-process Temporal server persisted under dataDir.
func startEmbedded(ctx context.Context, dataDir, ip string, port int, namespace string) (*devserver.Server, error) {
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	srv, err := devserver.Start(startCtx, devserver.Options{
		DBFile: dbFile(dataDir), IP: ip, Port: port, Namespace: namespace, SearchAttributes: workflows.SearchAttributes,
	})
	if err != nil {
		return nil, fmt.Errorf("start embedded Temporal server: %w", err)
	}
	return srv, nil
}

// workerFlags are the worker's own settings.
type workerFlags struct {
	heartbeat time.Duration
	// queues the worker polls; empty: the connection's task queue.
	queues []string
	// concurrent activities per queue.
	concurrent int
}

// startWorker connects a worker to the server at c.Address, serving its
// metrics on c.MetricsAddr when set.
func startWorker(ctx context.Context, c config.Connection, wf workerFlags) (client.Client, *worker.Pool, func(), error) {
	store, err := openStore(ctx, c)
	if err != nil {
		return nil, nil, nil, err
	}
	var rec *metrics.Recorder
	var sdkMetrics client.MetricsHandler
	var serving *metrics.Server
	if c.MetricsAddr != "" {
		rec = metrics.NewRecorder()
		if sdkMetrics, err = rec.SDKHandler(); err != nil {
			return nil, nil, nil, err
		}
		if serving, err = rec.Serve(c.MetricsAddr); err != nil {
			return nil, nil, nil, err
		}
		fmt.Printf("Metrics on http://%s/metrics\n", serving.Addr)
	}
	stopServing := func() {
		if serving != nil {
			serving.Close()
		}
	}
	cl, err := dialReporting(ctx, c, sdkMetrics)
	if err != nil {
		stopServing()
		return nil, nil, nil, err
	}
	// The workflows keep search attributes current; a namespace without them
	// would fail their workflow tasks.
	if err := devserver.EnsureSearchAttributes(ctx, cl.OperatorService(), c.Namespace, workflows.SearchAttributes); err != nil {
		cl.Close()
		stopServing()
		return nil, nil, nil, fmt.Errorf("register search attributes %v in namespace %s (or ask the server's operator to): %w", sortedKeys(workflows.SearchAttributes), c.Namespace, err)
	}
	p := worker.NewPool(cl, store, worker.Options{TaskQueue: c.TaskQueue, HeartbeatInterval: wf.heartbeat,
		ConcurrentActivities: wf.concurrent, DataRoots: c.Roots(), XLAPlugins: c.XLAPlugins, Metrics: rec}, wf.queues)
	if err := p.Start(); err != nil {
		cl.Close()
		stopServing()
		return nil, nil, nil, err
	}
	return cl, p, func() { p.Stop(); cl.Close(); stopServing() }, nil
}

func devCmd() *cobra.Command {
	var (
		port     int
		ip       string
		noWorker bool
		ui       bool
		uiPort   int
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded Temporal server (SQLite under the data dir) and a worker",
		Long: `dev runs a Temporal server inside this process, persisted to <data-dir>/temporal.db,
with namespace "default" and alignflow's search attributes registered, plus a worker
on the alignflow task queue. Stopping and restarting it keeps every workflow's history.
In another terminal:

  temporal workflow start --type Alignment --task-queue alignflow --input-file examples/tiny-run.json
  temporal workflow list
  temporal workflow show --workflow-id ID`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connection(cmd)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
				return fmt.Errorf("data dir %s: %w", c.DataDir, err)
			}
			ctx := cmd.Context()
			srv, err := startEmbedded(ctx, c.DataDir, ip, port, c.Namespace)
			if err != nil {
				return err
			}
			defer srv.Stop()
			c.Address = srv.FrontendHostPort()
			abs, _ := filepath.Abs(c.DataDir)
			fmt.Printf("Temporal server on %s (namespace %s), history in %s\n", c.Address, c.Namespace, dbFile(abs))
			if ui {
				if !cmd.Flags().Changed("ui-port") {
					uiPort = port + 1000 // as temporal server start-dev
				}
				startCtx, cancel := context.WithTimeout(ctx, time.Minute)
				web, err := devserver.StartUI(startCtx, ip, uiPort, c.Address, c.Namespace)
				cancel()
				if err != nil {
					return fmt.Errorf("web UI: %w (choose another port with --ui-port)", err)
				}
				defer web.Stop()
				fmt.Printf("Temporal Web UI on %s\n", web.URL())
			}
			if !noWorker {
				_, _, stopWorker, err := startWorker(ctx, c, workerFlags{})
				if err != nil {
					return err
				}
				defer stopWorker()
				fmt.Printf("Worker on task queue %s, artifacts in %s; %s\n", c.TaskQueue, abs, rootsLine(c))
			}
			fmt.Printf("Start a run:  temporal workflow start --address %s --type Alignment --task-queue %s --input-file examples/tiny-run.json\n", c.Address, c.TaskQueue)
			fmt.Println("Press Ctrl-C to stop.")
			<-ctx.Done()
			fmt.Println("Stopping.")
			return nil
		},
	}
	cmd.Flags().IntVar(&port, "port", devserver.DefaultPort, "frontend port of the embedded server")
	cmd.Flags().StringVar(&ip, "ip", "127.0.0.1", "address the embedded server binds to")
	cmd.Flags().BoolVar(&noWorker, "no-worker", false, "run only the server")
	addMetricsFlag(cmd)
	config.AddXLAPluginFlag(cmd.Flags())
	cmd.Flags().BoolVar(&ui, "ui", false, "also serve the Temporal Web UI")
	cmd.Flags().IntVar(&uiPort, "ui-port", devserver.DefaultUIPort, "port of the Web UI (default: --port + 1000)")
	return cmd
}

func workerCmd() *cobra.Command {
	var wf workerFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker against an existing Temporal server",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connection(cmd)
			if err != nil {
				return err
			}
			_, pool, stop, err := startWorker(cmd.Context(), c, wf)
			if err != nil {
				return err
			}
			defer stop()
			fmt.Printf("Worker on task queue(s) %s at %s (namespace %s), at most %d activities at once on each, artifacts in %s; %s. Press Ctrl-C to stop.\n",
				strings.Join(pool.Queues, ", "), c.Address, c.Namespace, max(wf.concurrent, 1), pool.Store, rootsLine(c)+pluginsLine(c))
			for _, line := range queueLines(pool.Queues, c.TaskQueue) {
				fmt.Println(line)
			}
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().DurationVar(&wf.heartbeat, "heartbeat-interval", worker.DefaultHeartbeatInterval,
		"most time a running activity's latest progress and checkpoint wait before reaching the server")
	cmd.Flags().StringSliceVar(&wf.queues, "task-queues", nil,
		"task queues to poll, comma-separated (default: --task-queue); a run's spec routes work with queues.train, queues.rollout, queues.eval")
	addMetricsFlag(cmd)
	config.AddXLAPluginFlag(cmd.Flags())
	cmd.Flags().IntVar(&wf.concurrent, "max-concurrent-activities", 1, "activities run at once on each task queue (training uses every core: keep 1 unless the machine has room)")
	return cmd
}

// addMetricsFlag declares --metrics-addr (resolved with the connection
// settings, so ALIGNFLOW_METRICS_ADDR and a settings file's metrics-addr work too).
func addMetricsFlag(cmd *cobra.Command) {
	cmd.Flags().String("metrics-addr", "", "serve Prometheus metrics (alignflow_ and the Temporal SDK's temporal_ series) on http://HOST:PORT/metrics, e.g. 127.0.0.1:9464; "+
		"an address other machines reach shows them run IDs and stage names, so open one only to your Prometheus (env ALIGNFLOW_METRICS_ADDR; default: off)")
}

// openStore opens the connection's artifact store: the data dir, or the
// object store --store names.
// storeOf opens the artifact store the command's connection flags name
// (--data-dir or --store), for commands that read a run's artifacts.
func storeOf(cmd *cobra.Command) (*artifact.Store, error) {
	c, err := connection(cmd)
	if err != nil {
		return nil, err
	}
	return openStore(cmd.Context(), c)
}

func openStore(ctx context.Context, c config.Connection) (*artifact.Store, error) {
	if c.Store == "" {
		return artifact.Open(c.DataDir)
	}
	return artifact.OpenURL(ctx, c.Store, artifact.Options{CacheDir: c.CacheDir, CacheMaxBytes: int64(c.CacheMaxGB * 1e9)})
}

// queueLines say what work each of a worker's queues can receive: the
// workflow queue gets the workflows and every stage a run does not route
// elsewhere; any other queue only what a run's spec routes to it, which
// no stage does by default.
func queueLines(queues []string, workflowQueue string) []string {
	var out []string
	for _, q := range queues {
		if q == workflowQueue {
			out = append(out, fmt.Sprintf("  %s: workflows started on it, and every stage of a run whose spec routes none elsewhere", q))
			continue
		}
		out = append(out, fmt.Sprintf("  %s: no stage uses it unless a run's spec routes work to it (queues.train, queues.rollout or queues.eval: %q); workflows start on %s", q, q, workflowQueue))
	}
	return out
}

// rootsLine says which files a worker lets runs name.
func rootsLine(c config.Connection) string {
	r := c.Roots()
	switch {
	case r.Any():
		return "runs may name any file the worker can read (a loopback address; confine them with --data-root)"
	case len(r.Dirs()) == 0:
		return "runs may name no file: the server is not on this machine (allow some with --data-root DIR, any with --data-root /)"
	}
	return "runs may name files under " + strings.Join(r.Dirs(), ", ") + " only"
}

// pluginsLine says which XLA plugins a worker lets runs name, if any.
func pluginsLine(c config.Connection) string {
	if names := c.XLAPlugins.Names(); len(names) > 0 {
		return "; runs may name the XLA plugins " + strings.Join(names, ", ")
	}
	return ""
}

// isPortInUse reports whether err says the embedded server's port is taken.
func isPortInUse(err error) bool { return errors.Is(err, devserver.ErrPortInUse) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
