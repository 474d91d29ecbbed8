package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

func TestRunsRolloutsPrintsAnIteration(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	defer store.Close()
	shaped, lp, ver := 0.75, -3.5, 1.0
	records := []pipeline.RolloutRecord{
		{PromptIndex: 0, SampleIndex: 0, Prompt: "p", Response: "hot\nday", Tokens: []int32{5, 6}, Ended: true, Reward: 0.8, Verifier: &ver, KL: 0.5, Shaped: &shaped, Advantage: 0.25, LogProb: &lp},
		{PromptIndex: 0, SampleIndex: 1, Prompt: "p", Response: "cold", Reward: 0.1, KL: 0.1, Advantage: -0.25}, // recorded before shaped and logprob
	}
	key, err := pipeline.RunKey("run-1", pipeline.IterationDir(1), pipeline.RolloutsFile)
	require.NoError(t, err)
	_, err = store.PutJSON(key, records)
	require.NoError(t, err)

	var out bytes.Buffer
	require.NoError(t, printRollouts(rolloutsOptions{out: &out, store: store, runID: "run-1", iteration: 2, json: true}))
	var got []map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	require.Len(t, got, 2)
	assert.Equal(t, map[string]any{"prompt_index": 0.0, "sample_index": 0.0, "prompt": "p", "response": "hot\nday", "tokens": []any{5.0, 6.0},
		"ended": true, "reward_model": 0.8, "verifier": 1.0, "kl_penalty": 0.5, "reward": 0.75, "advantage": 0.25, "logprob": -3.5}, got[0])
	assert.Nil(t, got[1]["reward"], "not recorded: null, not 0")
	assert.Nil(t, got[1]["logprob"])

	out.Reset()
	require.NoError(t, printRollouts(rolloutsOptions{out: &out, store: store, runID: "run-1", iteration: 2}))
	assert.Contains(t, out.String(), "ADVANTAGE")
	assert.Contains(t, out.String(), "hot day", "a response on one line")

	err = printRollouts(rolloutsOptions{out: &out, store: store, runID: "run-1", iteration: 3})
	assert.ErrorContains(t, err, "run run-1 has no iteration 3")
	err = printRollouts(rolloutsOptions{out: &out, store: store, runID: "run-1"})
	assert.ErrorContains(t, err, "--iteration N is required")
}
