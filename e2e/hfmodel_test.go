package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/ops/export"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

// TestAlignmentFromAHuggingFaceModel aligns llama2.c's stories260K, loaded
// from its Hugging Face directory, on a real server and worker: every stage
// runs on the loaded model, and the exported policy loads back with the
// run's final weights.
func TestAlignmentFromAHuggingFaceModel(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	src := fixtures.Path(t, "models", "stories260K")
	cl, store := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := config.Default()
	s.Name = "stories"
	s.Model.Path = src
	s.Data.Generate.Prompts = 300
	s.SFT.Steps, s.SFT.BatchSize = 60, 8
	s.Reward.Steps, s.Reward.RegressionSteps, s.Reward.BatchSize = 10, 10, 8
	s.Reinforce.Iterations, s.Reinforce.PromptsPerIteration, s.Reinforce.BatchSize, s.Reinforce.MaxTokens = 2, 8, 32, 16
	s.Eval.Prompts, s.Eval.SamplesPerPrompt = 8, 2
	s.Compare.BenchPairsPerSubset = 4
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-stories", TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, s)
	require.NoError(t, err)
	var sum pipeline.Summary
	require.NoError(t, run.Get(ctx, &sum))
	require.NotNil(t, sum.Data.Model)
	assert.Equal(t, "LlamaForCausalLM", sum.Data.Model.Architecture)
	assert.Equal(t, 2, sum.Policy.Iterations)
	require.NotNil(t, sum.Policy.GoldScoreAfter)
	t.Logf("SFT loss %.3f -> %.3f; gold %.3f -> %.3f", sum.SFT.FirstLoss, sum.SFT.FinalLoss, *sum.Policy.GoldScoreBefore, *sum.Policy.GoldScoreAfter)

	out := filepath.Join(t.TempDir(), "aligned")
	_, err = export.Policy(store, "e2e-stories", out, export.Merged)
	require.NoError(t, err)
	back, err := hfmodel.Load(out)
	require.NoError(t, err)
	final, err := store.GetWeights(sum.Policy.Checkpoint)
	require.NoError(t, err)
	require.Equal(t, final.Names(), back.Params.Names())
	for _, n := range final.Names() {
		assert.Equal(t, final.Get(n).Data, back.Params.Get(n).Data, "%s: the exported weights are the run's", n)
	}
	assert.Equal(t, final.Digest(), sum.Policy.Digest)
	_, err = export.Policy(store, "e2e-stories", out, export.Merged)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already exists")

	// The reward model exports as a LlamaForSequenceClassification that
	// loads back with the run's weights and scores as the run's does.
	rmOut := filepath.Join(t.TempDir(), "reward")
	_, err = export.Reward(store, "e2e-stories", rmOut, export.Merged)
	require.NoError(t, err)
	cls, err := hfmodel.Load(rmOut)
	require.NoError(t, err)
	assert.True(t, cls.Config.Classifier)
	rm, err := store.GetWeights(sum.RewardModel.Checkpoint)
	require.NoError(t, err)
	require.Equal(t, rm.Names(), cls.Params.Names())
	for _, n := range rm.Names() {
		assert.Equal(t, rm.Get(n).Data, cls.Params.Get(n).Data, "%s: the exported reward model is the run's", n)
	}

	// The same run with LoRA adapters of rank 4 on every projection: every
	// stage trains an adapter, REINFORCE stores only its adapter, and both
	// export formats give the same model.
	// Two rollout shards, and one: the same weights.
	s.Name, s.LoRA = "stories-lora", config.LoRA{Rank: 4, Dropout: 0.05}
	s.Reinforce.BatchSize, s.Reinforce.RolloutShards = 16, 2
	var ls, oneShard pipeline.Summary
	for _, r := range []struct {
		id     string
		shards int
		sum    *pipeline.Summary
	}{{"e2e-stories-lora", 2, &ls}, {"e2e-stories-lora-1", 1, &oneShard}} {
		s.Reinforce.RolloutShards, s.ReuseStageOutputs = r.shards, r.shards == 2 // the second computes every stage again
		run, err = cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: r.id, TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, s)
		require.NoError(t, err)
		require.NoError(t, run.Get(ctx, r.sum))
	}
	assert.Equal(t, ls.Policy.Digest, oneShard.Policy.Digest, "the adapter is the same for any number of rollout shards")
	t.Logf("LoRA: SFT loss %.3f -> %.3f; gold %.3f -> %.3f", ls.SFT.FirstLoss, ls.SFT.FinalLoss, *ls.Policy.GoldScoreBefore, *ls.Policy.GoldScoreAfter)
	assert.Less(t, ls.SFT.FinalLoss, ls.SFT.FirstLoss, "the SFT adapter learns")
	adapter, err := store.GetWeights(ls.Policy.Checkpoint)
	require.NoError(t, err)
	assert.Less(t, adapter.NumParams(), final.NumParams()/4, "the final policy is stored as its adapter")
	assert.NotEqual(t, ls.Policy.Digest, ls.SFT.Digest, "REINFORCE trained its adapter")
	peft := checkLoRAExports(t, store, "e2e-stories-lora", src, ls)

	// A run whose SFT starts from that PEFT adapter (rank 8: the SFT and
	// REINFORCE adapters stacked) starts where the first run ended.
	s.Name, s.LoRA, s.ReuseStageOutputs = "stories-lora-path", config.LoRA{Rank: 8, Alpha: 16, Path: peft}, true
	s.Reinforce.Iterations = 1
	run, err = cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-stories-lora-path", TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, s)
	require.NoError(t, err)
	var ps pipeline.Summary
	require.NoError(t, run.Get(ctx, &ps))
	require.NotNil(t, ps.Data.Model.LoRA)
	t.Logf("from lora.path: SFT loss %.3f -> %.3f", ps.SFT.FirstLoss, ps.SFT.FinalLoss)
	assert.Less(t, ps.SFT.FirstLoss, ls.SFT.FirstLoss-1, "SFT starts from the trained adapter")
}
