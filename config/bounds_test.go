package config

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
)

// TestSizesHaveUpperBounds: each size had a lower bound only, so 1e12 SFT
// steps or a 1e9-wide hidden layer passed and ended in an out-of-memory or
// a days-long activity, and 1e9 rollout shards made the workflow allocate
// a future for each on every replay. Each is refused, naming the field and
// its bound; runs recorded before the bounds validate as they did.
func TestSizesHaveUpperBounds(t *testing.T) {
	cases := []struct {
		name, json string
		want       []string
	}{
		{"sft steps", `{"sft": {"steps": 1000000000000}}`, []string{"sft.steps", "at most 10000000", "got 1000000000000"}},
		{"sft batch", `{"sft": {"batch_size": 1000000000}}`, []string{"sft.batch_size", "at most 65536"}},
		{"hidden", `{"model": {"hidden": 1000000000}}`, []string{"model.hidden", "at most 131072"}},
		{"dim", `{"model": {"dim": 1048576, "heads": 4}}`, []string{"model.dim", "at most 32768"}},
		{"layers", `{"model": {"layers": 100000}}`, []string{"model.layers", "at most 512"}},
		{"heads", `{"model": {"heads": 4096, "dim": 8192}}`, []string{"model.heads", "at most 512"}},
		{"eval prompts", `{"eval": {"prompts": 1000000000}}`, []string{"eval.prompts", "at most 65536"}},
		{"eval samples", `{"eval": {"samples_per_prompt": 1000000}}`, []string{"eval.samples_per_prompt", "at most 1024"}},
		{"show samples", `{"eval": {"show_samples": 100000}}`, []string{"eval.show_samples", "at most 100"}},
		{"reward steps", `{"reward": {"steps": 1000000000000, "regression_steps": 1000000000000}}`, []string{"reward.steps", "reward.regression_steps"}},
		{"reward batch", `{"reward": {"batch_size": 1000000000}}`, []string{"reward.batch_size"}},
		{"checkpoints", `{"sft": {"checkpoint_every": 1000000000000}, "reward": {"checkpoint_every": 1000000000000}}`, []string{"sft.checkpoint_every", "reward.checkpoint_every"}},
		{"iterations", `{"reinforce": {"iterations": 1000000000, "continue_as_new_every": 1000000000}}`, []string{"reinforce.iterations", "reinforce.continue_as_new_every"}},
		{"max tokens", `{"reinforce": {"max_tokens": 1000000}}`, []string{"reinforce.max_tokens", "at most 4096"}},
		{"rl batch", `{"reinforce": {"batch_size": 1000000000}}`, []string{"reinforce.batch_size"}},
		{"generated prompts", `{"data": {"generate": {"prompts": 1000000000}}}`, []string{"data.generate.prompts", "at most 1000000"}},
		{"keep iterations", `{"retention": {"keep_iterations": 1000000000}}`, []string{"retention.keep_iterations"}},
		{"bench pairs", `{"compare": {"bench_pairs_per_subset": 1000000000}}`, []string{"compare.bench_pairs_per_subset"}},
		{"shards", `{"reinforce": {"prompts_per_iteration": 1000000, "samples_per_prompt": 1000, "batch_size": 1, "rollout_shards": 1000000000}}`,
			[]string{"reinforce.rollout_shards: must be at most 1024, got 1000000000", "reinforce.prompts_per_iteration: must be at most 65536"}},
		{"rows overflow", `{"reinforce": {"prompts_per_iteration": 4611686018427387904, "samples_per_prompt": 4, "rollout_shards": 1000000000}}`,
			[]string{"reinforce.prompts_per_iteration", "at most 65536", "reinforce.rollout_shards"}},
		{"rows product", `{"reinforce": {"prompts_per_iteration": 65536, "samples_per_prompt": 1024}}`,
			[]string{"reinforce.prompts_per_iteration", "x reinforce.samples_per_prompt (65536 x 1024)", "at most 1048576", "got 67108864"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := Parse([]byte(tc.json))
			require.NoError(t, err)
			err = spec.Validate()
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			if tc.name != "rows overflow" { // a negative product failed the recorded checks too
				assert.NoError(t, spec.ValidateRecorded(), "a run recorded before the bounds replays as it ran")
			}
		})
	}
}

// TestBoundsAdmitRealRuns: the defaults, the examples' sizes and real ones
// (a 7B model's shape, 100k SFT steps, a large REINFORCE batch) pass.
func TestBoundsAdmitRealRuns(t *testing.T) {
	for name, edit := range map[string]func(*Spec){
		"defaults":  func(*Spec) {},
		"7B shape":  func(s *Spec) { s.Model = Model{Dim: 4096, Heads: 32, Layers: 32, Hidden: 11008, MaxLen: 4096} },
		"70B shape": func(s *Spec) { s.Model = Model{Dim: 8192, Heads: 64, Layers: 80, Hidden: 28672, MaxLen: 4096} },
		"100k steps": func(s *Spec) {
			s.SFT.Steps, s.Reward.Steps, s.Reward.RegressionSteps, s.SFT.CheckpointEvery = 100_000, 100_000, 300_000, 1000
		},
		"big iterations": func(s *Spec) {
			s.Reinforce.PromptsPerIteration, s.Reinforce.SamplesPerPrompt, s.Reinforce.BatchSize, s.Reinforce.RolloutShards = 1024, 16, 256, 64
			s.Reinforce.Iterations, s.Reinforce.MaxTokens = 10_000, 1024
			s.Eval.Prompts, s.Eval.SamplesPerPrompt = 2000, 16
		},
	} {
		spec := Default()
		edit(&spec)
		assert.NoError(t, spec.Validate(), name)
	}
}

// TestRolloutArithmeticDoesNotOverflow: prompts_per_iteration x
// samples_per_prompt wrapped around, and the batches with it.
func TestRolloutArithmeticDoesNotOverflow(t *testing.T) {
	r := Default().Reinforce
	r.PromptsPerIteration, r.SamplesPerPrompt, r.BatchSize = math.MaxInt/2+1, 4, 64
	assert.Equal(t, math.MaxInt, r.RolloutRows(), "saturates instead of wrapping")
	assert.Positive(t, r.RolloutBatches())
	_, _, err := r.ShardRows(0, 1)
	assert.ErrorContains(t, err, "at most 1048576")

	r.PromptsPerIteration, r.SamplesPerPrompt, r.BatchSize = 1, math.MaxInt, 2
	assert.Equal(t, math.MaxInt/2+1, r.RolloutBatches(), "rounded up without overflowing")
}

// TestSpecNamesNoPluginFile: backend "xla:/abs/path.so" passed the spec
// check and made a worker with XLA load that file. A spec names a plugin by
// a plain name only; runs recorded before that replay as they did.
func TestSpecNamesNoPluginFile(t *testing.T) {
	for _, name := range []string{"xla:/tmp/evil.so", "xla:../evil.so", "xla:lib/evil.so"} {
		spec := Default()
		spec.Backend = name
		err := spec.Validate()
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "spec field backend", name)
		assert.Contains(t, err.Error(), "not a plain name", name)
		assert.Contains(t, err.Error(), "allowed: go, go-stock, xla, xla:PLUGIN", name)
		if name == "xla:/tmp/evil.so" {
			assert.NoError(t, spec.ValidateRecorded(), "a run recorded with a path replays")
		}
	}
	spec := Default()
	spec.Backend = "xla:cuda"
	assert.NoError(t, spec.Validate())
}

// TestConnectionXLAPlugins: a worker's allow-list comes, like the other
// connection settings, from the flag, the environment or the settings file.
func TestConnectionXLAPlugins(t *testing.T) {
	load := func(t *testing.T, settings string, args ...string) (Connection, error) {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		AddConnectionFlags(fs)
		AddXLAPluginFlag(fs)
		require.NoError(t, fs.Parse(args))
		return LoadConnection(fs, settings)
	}
	t.Run("flags", func(t *testing.T) {
		c, err := load(t, "", "--xla-plugin", "cuda=/opt/pjrt/cuda.so", "--xla-plugin", "/opt/pjrt/default.so")
		require.NoError(t, err)
		assert.Equal(t, backend.Plugins{"cuda": "/opt/pjrt/cuda.so", "": "/opt/pjrt/default.so"}, c.XLAPlugins)
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv(backend.PluginEnv, "cuda=/opt/pjrt/cuda.so"+string(os.PathListSeparator)+"rocm=rocm")
		c, err := load(t, "")
		require.NoError(t, err)
		assert.Equal(t, backend.Plugins{"cuda": "/opt/pjrt/cuda.so", "rocm": "rocm"}, c.XLAPlugins)
	})
	t.Run("settings file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "settings.yaml")
		require.NoError(t, os.WriteFile(f, []byte("xla-plugin: [cuda=/opt/pjrt/cuda.so]\n"), 0o644))
		c, err := load(t, f)
		require.NoError(t, err)
		assert.Equal(t, backend.Plugins{"cuda": "/opt/pjrt/cuda.so"}, c.XLAPlugins)
	})
	t.Run("none", func(t *testing.T) {
		c, err := load(t, "")
		require.NoError(t, err)
		assert.Nil(t, c.XLAPlugins)
	})
	t.Run("bad", func(t *testing.T) {
		_, err := load(t, "", "--xla-plugin", "../evil=/tmp/evil.so")
		assert.ErrorContains(t, err, "xla-plugin (flag --xla-plugin")
		assert.ErrorContains(t, err, "not a plain name")
	})
}
