package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultIsValid(t *testing.T) {
	require.NoError(t, Default().Validate())
	assert.False(t, Default().LoRA.On(), "LoRA is off by default")
	lora, err := Parse([]byte(`{"lora": {"rank": 8}}`))
	require.NoError(t, err)
	require.NoError(t, lora.Validate())
	assert.Equal(t, 16.0, lora.LoRA.AlphaOrDefault(), "alpha defaults to 2 x rank")
	spec, err := Parse([]byte(`{"seed": 7, "reinforce": {"iterations": 3}}`))
	require.NoError(t, err)
	assert.Equal(t, int64(7), spec.Seed)
	assert.Equal(t, 3, spec.Reinforce.Iterations)
	assert.Equal(t, Default().Reinforce.SamplesPerPrompt, spec.Reinforce.SamplesPerPrompt, "unset fields keep defaults")
}

func TestBadSpecsNameTheField(t *testing.T) {
	cases := []struct {
		name, json string
		want       []string
	}{
		{"unknown backend", `{"backend": "tpu"}`, []string{"backend", `"tpu"`, "allowed: go"}},
		{"K below 2", `{"reinforce": {"samples_per_prompt": 1}}`, []string{"reinforce.samples_per_prompt", "at least 2"}},
		{"non-positive learning rate", `{"sft": {"learning_rate": 0}}`, []string{"sft.learning_rate", "positive"}},
		{"negative reinforce lr", `{"reinforce": {"learning_rate": -1}}`, []string{"reinforce.learning_rate"}},
		{"unknown top-level field", `{"seeds": 1}`, []string{"seeds", "unknown field", "allowed: name, seed, backend"}},
		{"unknown nested field", `{"sft": {"stepz": 1}}`, []string{"sft.stepz", "unknown field", "steps"}},
		{"wrong type", `{"sft": {"steps": "many"}}`, []string{"sft.steps", "integer"}},
		{"unknown recipe", `{"reward": {"recipe": "dpo"}}`, []string{"reward.recipe", "bt-scaled"}},
		{"unknown kl estimator", `{"reinforce": {"kl_estimator": "k7"}}`, []string{"reinforce.kl_estimator", "k3"}},
		{"unknown advantage", `{"reinforce": {"advantage": "ppo"}}`, []string{"reinforce.advantage", "rloo", "dr-grpo", "reinforce++"}},
		{"unknown aggregation", `{"reinforce": {"loss_aggregation": "sum"}}`, []string{"reinforce.loss_aggregation", "seq-mean-token-sum-norm"}},
		{"unknown kl placement", `{"reinforce": {"kl_in": "advantage"}}`, []string{"reinforce.kl_in", "reward, loss, none"}},
		{"unknown ratio", `{"reinforce": {"ratio": "batch"}}`, []string{"reinforce.ratio", "sequence"}},
		{"too many epochs", `{"reinforce": {"update_epochs": 65}}`, []string{"reinforce.update_epochs", "0..64"}},
		{"more minibatches than batches", `{"reinforce": {"minibatches": 2}}`, []string{"reinforce.minibatches", "the 1 rollout batches"}},
		{"too many sampling rounds", `{"reinforce": {"skip_uniform_groups": true, "max_sampling_rounds": 17}}`, []string{"reinforce.max_sampling_rounds", "0..16"}},
		{"sampling rounds without dynamic sampling", `{"reinforce": {"max_sampling_rounds": 4}}`, []string{"reinforce.max_sampling_rounds", "needs reinforce.skip_uniform_groups"}},
		{"staleness above the bound", `{"reinforce": {"max_staleness": 9}}`, []string{"reinforce.max_staleness", "0..8"}},
		{"clip_low of 1", `{"reinforce": {"clip_low": 1}}`, []string{"reinforce.clip_low", "[0, 1)"}},
		{"unknown verifier", `{"reward": {"verifier": "llm-judge"}}`, []string{"reward.verifier", "numeric"}},
		{"no reward at all", `{"reward": {"model_weight": 0}}`, []string{"reward.model_weight", "reward of 0"}},
		{"verifier weight without a verifier", `{"reward": {"verifier_weight": 2}}`, []string{"reward.verifier_weight", "needs reward.verifier"}},
		{"only one data file", `{"data": {"ratings": "r.jsonl"}}`, []string{"data", "both"}},
		{"heads do not divide dim", `{"model": {"dim": 30, "heads": 4}}`, []string{"model.dim"}},
		{"not JSON", `{"seed": `, []string{"not valid JSON"}},
		{"negative lora rank", `{"lora": {"rank": -1}}`, []string{"lora.rank", "0..32768"}},
		{"lora fields without a rank", `{"lora": {"alpha": 16}}`, []string{"lora.rank", "is 0", "give a positive rank"}},
		{"lora dropout of 1", `{"lora": {"rank": 8, "dropout": 1}}`, []string{"lora.dropout", "must be in [0, 1)"}},
		{"negative lora alpha", `{"lora": {"rank": 8, "alpha": -2}}`, []string{"lora.alpha", "positive"}},
		{"unknown lora target", `{"lora": {"rank": 8, "targets": ["q_proj", "fc1"]}}`, []string{"lora.targets[1]", `"fc1"`, "allowed: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"}},
		{"lora target twice", `{"lora": {"rank": 8, "targets": ["q_proj", "q_proj"]}}`, []string{"lora.targets[1]", "twice"}},
		{"lora.path without model.path", `{"lora": {"rank": 8, "path": "/adapters/a"}}`, []string{"lora.path", "needs model.path"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := Parse([]byte(tc.json))
			if err == nil {
				err = spec.Validate()
			}
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestMissingDataFile(t *testing.T) {
	spec := Default()
	spec.Data.Ratings = "/nonexistent/ratings.jsonl"
	spec.Data.Preferences = "/nonexistent/prefs.jsonl"
	require.NoError(t, spec.Validate())
	err := spec.CheckFiles()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "data.ratings")
	assert.Contains(t, err.Error(), "/nonexistent/ratings.jsonl")
}

func TestLoadFileYAMLAndStrictness(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "run.yaml")
	require.NoError(t, os.WriteFile(good, []byte("name: tiny\nseed: 3\nreinforce:\n  iterations: 2\n  kl_beta: 0.05\n"), 0o644))
	spec, err := LoadFile(good)
	require.NoError(t, err)
	assert.Equal(t, "tiny", spec.Name)
	assert.Equal(t, 0.05, spec.Reinforce.KLBeta)

	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("reinforce:\n  iterationz: 2\n"), 0o644))
	_, err = LoadFile(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), bad)
	assert.Contains(t, err.Error(), "reinforce.iterationz")
}

func TestConnectionPrecedence(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	AddConnectionFlags(fs)
	t.Setenv("ALIGNFLOW_NAMESPACE", "from-env")
	t.Setenv("ALIGNFLOW_TASK_QUEUE", "queue-env")
	require.NoError(t, fs.Parse([]string{"--task-queue", "queue-flag"}))
	c, err := LoadConnection(fs, "")
	require.NoError(t, err)
	assert.Equal(t, DefaultAddress, c.Address)
	assert.Equal(t, "from-env", c.Namespace)
	assert.Equal(t, "queue-flag", c.TaskQueue, "a flag wins over the environment")
}

// TestShardRows: an iteration's rows split into whole generation batches,
// as evenly as the batches allow; every row in exactly one shard.
func TestShardRows(t *testing.T) {
	r := Default().Reinforce
	r.PromptsPerIteration, r.SamplesPerPrompt, r.BatchSize = 5, 4, 8 // 20 rows, 3 batches (8, 8, 4)
	require.Equal(t, 20, r.RolloutRows())
	require.Equal(t, 3, r.RolloutBatches())
	for _, tc := range []struct {
		shards int
		want   [][2]int
	}{
		{1, [][2]int{{0, 20}}},
		{2, [][2]int{{0, 8}, {8, 20}}},
		{3, [][2]int{{0, 8}, {8, 16}, {16, 20}}},
	} {
		for s, w := range tc.want {
			first, last, err := r.ShardRows(s, tc.shards)
			require.NoError(t, err)
			assert.Equal(t, w, [2]int{first, last}, "shard %d of %d", s, tc.shards)
		}
	}
	for _, bad := range [][2]int{{0, 4}, {3, 3}, {-1, 2}, {0, 0}} {
		_, _, err := r.ShardRows(bad[0], bad[1])
		assert.ErrorContains(t, err, "reinforce.rollout_shards: shard", "shard %d of %d", bad[0], bad[1])
	}
}
