package activities

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/pipeline"
)

func tinySpec() config.Spec {
	spec := config.Default()
	spec.Data.Generate.Prompts = 200
	spec.Model = config.Model{Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 56}
	spec.SFT.Steps, spec.SFT.CheckpointEvery = 12, 4
	spec.Reward.Steps, spec.Reward.CheckpointEvery, spec.Reward.BatchSize = 8, 3, 8
	spec.Reward.RegressionSteps = 9
	spec.ReuseStageOutputs = false // the tests repeat stages in one store on purpose
	return spec
}

// checkpointRef is the ref a heartbeat would carry for a saved checkpoint.
func checkpointRef(t *testing.T, store *artifact.Store, rel string) *artifact.Ref {
	t.Helper()
	b, err := os.ReadFile(store.Abs(artifact.Ref{Path: rel}))
	require.NoError(t, err, "checkpoint %s saved", rel)
	sum := sha256.Sum256(b)
	return &artifact.Ref{Path: rel, SHA256: hex.EncodeToString(sum[:]), Bytes: int64(len(b))}
}

// TestResumeFromCheckpointIsExact retries SFT and reward-model training from
// each checkpoint an uninterrupted attempt saved, as Temporal retries an
// activity whose worker died: every resumed attempt must end with the
// uninterrupted attempt's weights, bit for bit.
func TestResumeFromCheckpointIsExact(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	spec := tinySpec()
	var suite testsuite.WorkflowTestSuite
	run := func(fn any, in any, resume *artifact.Ref) (pipeline.TrainResult, error) {
		env := suite.NewTestActivityEnvironment()
		env.RegisterActivity(a)
		if resume != nil {
			env.SetHeartbeatDetails(pipeline.Progress{Checkpoint: resume})
		}
		v, err := env.ExecuteActivity(fn, in)
		var res pipeline.TrainResult
		if err == nil {
			require.NoError(t, v.Get(&res))
		}
		return res, err
	}

	var data pipeline.Data
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	v, err := env.ExecuteActivity(a.PrepareData, pipeline.PrepareDataInput{RunID: "r", Spec: spec})
	require.NoError(t, err)
	require.NoError(t, v.Get(&data))

	sftIn := pipeline.TrainInput{RunID: "r", Spec: spec, Data: data}
	sft, err := run(a.TrainSFT, sftIn, nil)
	require.NoError(t, err)
	for _, step := range []int{4, 8} {
		got, err := run(a.TrainSFT, sftIn, checkpointRef(t, store, fmt.Sprintf("runs/r/sft/checkpoints/sft-%06d.json", step)))
		require.NoError(t, err)
		assert.Equal(t, sft.Digest, got.Digest, "SFT resumed at step %d", step)
		assert.Equal(t, sft.FirstLoss, got.FirstLoss, "the first loss survives the resume")
		assert.Equal(t, step, got.ResumedFrom)
	}

	// The resumed attempt really continues from the checkpoint (a restart
	// from scratch would give the same weights): a first loss planted in the
	// checkpoint comes back in the result.
	var planted trainCheckpoint
	require.NoError(t, store.GetJSON(*checkpointRef(t, store, "runs/r/sft/checkpoints/sft-000008.json"), &planted))
	planted.FirstLoss = 123
	plantedRef, err := store.PutJSON("runs/r/sft/checkpoints/planted.json", planted)
	require.NoError(t, err)
	got, err := run(a.TrainSFT, sftIn, &plantedRef)
	require.NoError(t, err)
	assert.Equal(t, 123.0, got.FirstLoss)
	assert.Equal(t, sft.Digest, got.Digest)

	// A two-phase recipe with ExPO, resumed in either phase.
	rmIn := pipeline.TrainInput{RunID: "r", Spec: spec, Data: data, Base: sft.Checkpoint, Recipe: "bt-scaled-from-regression-expo"}
	rm, err := run(a.TrainRewardModel, rmIn, nil)
	require.NoError(t, err)
	dir := "runs/r/reward/bt-scaled-from-regression-expo/checkpoints/"
	for ck, at := range map[string]int{"regression-helpfulness-000003": 3, "regression-helpfulness-000006": 6, "bt-scaled-000003": 12, "bt-scaled-000006": 15} {
		got, err := run(a.TrainRewardModel, rmIn, checkpointRef(t, store, dir+ck+".json"))
		require.NoError(t, err)
		assert.Equal(t, rm.Digest, got.Digest, "reward model resumed at %s", ck)
		assert.Equal(t, rm.ExPOAlpha, got.ExPOAlpha)
		assert.Equal(t, rm.Steps, got.Steps)
		assert.Equal(t, rm.FirstLoss, got.FirstLoss)
		assert.Equal(t, at, got.ResumedFrom, "resumed at %s", ck)
	}

	// Resumed in the BT phase, the regression phase is not trained again: its
	// result comes from the checkpoint.
	var bt trainCheckpoint
	require.NoError(t, store.GetJSON(*checkpointRef(t, store, dir+"bt-scaled-000003.json"), &bt))
	bt.Earlier.FirstLoss = 77
	btRef, err := store.PutJSON(dir+"planted.json", bt)
	require.NoError(t, err)
	got, err = run(a.TrainRewardModel, rmIn, &btRef)
	require.NoError(t, err)
	assert.Equal(t, 77.0, got.FirstLoss)
	assert.Equal(t, rm.Digest, got.Digest)

	// A damaged checkpoint stops the attempt, naming the file, instead of
	// resuming from garbage or silently starting over.
	ck := checkpointRef(t, store, "runs/r/sft/checkpoints/sft-000008.json")
	params := store.Abs(artifact.Ref{Path: "runs/r/sft/checkpoints/sft-000008.params.safetensors"})
	b, err := os.ReadFile(params)
	require.NoError(t, err)
	b[len(b)-1] ^= 0xff
	require.NoError(t, os.WriteFile(params, b, 0o644))
	_, err = run(a.TrainSFT, sftIn, ck)
	require.Error(t, err)
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	assert.Equal(t, pipeline.ErrCorruptArtifact, app.Type())
	assert.True(t, app.NonRetryable())
	assert.Contains(t, err.Error(), "sft-000008.params.safetensors")
}
