// Command alignflow runs RLHF end to end as durable Temporal workflows.
//
//	alignflow demo                      embedded server + worker, bundled tiny run
//	alignflow dev [--port 7233]         embedded Temporal server (SQLite) + worker
//	alignflow worker                    a worker for an existing server
//	alignflow run --config FILE         submit a run and follow it
//	alignflow data check --format F FILE validate a HelpSteer2/RewardBench file
//	alignflow reward compare --config F train and compare reward-model recipes
//	alignflow eval rewardbench --model M --data F  RewardBench-style scores
//	alignflow tokenize --model DIR --text S      token ids of a text or a chat
//	alignflow generate --model DIR --prompt S    continue a prompt with a model
//	alignflow score --model DIR --prompt S --response S  a reward model's scores
//	alignflow export RUN_ID --out DIR            a run's policy or reward model as a Hugging Face directory
//	alignflow gc [--dry-run]                    remove what finished runs no longer need
//	alignflow report RUN_ID [--out DIR]         a run's report: charts, timeline, samples, metrics.jsonl
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/ops/temporalconn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "alignflow:", err)
		var exit *exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		os.Exit(1)
	}
}

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "alignflow",
		Short:         "RLHF as durable Temporal workflows: reward models, REINFORCE, exact resume",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	config.AddConnectionFlags(root.PersistentFlags())
	root.PersistentFlags().String("settings", "", "connection settings file (YAML/JSON/TOML with the connection flags as keys: address, namespace, task-queue, data-dir, store, cache-dir, cache-max-gb, tls-cert, tls-key, tls-ca, tls-server-name, api-key, data-root; for workers metrics-addr, xla-plugin)")
	root.AddCommand(devCmd(), workerCmd(), runCmd(), demoCmd(), dataCmd(), rewardCmd(), evalCmd(), runsCmd(), resumeCmd(),
		tokenizeCmd(), generateCmd(), scoreCmd(), exportCmd(), gcCmd(), reportCmd())
	return root
}

// connection resolves the connection settings of a command.
func connection(cmd *cobra.Command) (config.Connection, error) {
	settings, _ := cmd.Flags().GetString("settings")
	return config.LoadConnection(cmd.Flags(), settings)
}

// quietLogger keeps the SDK's routine messages out of the user's terminal.
func quietLogger() sdklog.Logger {
	return sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

func dial(ctx context.Context, c config.Connection) (client.Client, error) {
	return dialReporting(ctx, c, nil)
}

// dialReporting dials with the SDK's metrics going to handler.
func dialReporting(ctx context.Context, c config.Connection, handler client.MetricsHandler) (client.Client, error) {
	cl, err := temporalconn.Dial(ctx, c, quietLogger(), handler)
	if err != nil {
		return nil, fmt.Errorf("%w; start one with `alignflow dev` or pass --embedded", err)
	}
	return cl, nil
}
