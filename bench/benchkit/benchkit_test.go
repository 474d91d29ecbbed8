package benchkit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/backend"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/weights"
)

func TestMedian(t *testing.T) {
	assert.Equal(t, 0.0, Median(nil))
	assert.Equal(t, 2.0, Median([]float64{3, 1, 2}))
	assert.Equal(t, 2.5, Median([]float64{4, 1, 3, 2}))
}

func TestDecodeSteps(t *testing.T) {
	samples := []policy.Sample{{Tokens: []int32{7, 8}}, {Tokens: []int32{7, 8, 9}}}
	// The prefill samples every row's first token, then two decode steps
	// give row 1 its other two.
	assert.Equal(t, 3, DecodeSteps(samples))
}

// The fixtures are deterministic and written in the layout the PyTorch
// reference reads.
func TestFixturesWrite(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	s := DefaultSizes()
	s.Reinforce.PolicySFTSteps = 0
	c := Counts{TrainWarmup: 1, TrainSteps: 1, GenWarmup: 1, GenSteps: 1, RLWarmup: 1, RLSteps: 1}
	d := LoadData(s)
	f, err := NewFixtures(be, s, c, d)
	require.NoError(t, err)
	g, err := NewFixtures(be, s, c, d)
	require.NoError(t, err)
	assert.Equal(t, f.Policy.Digest(), g.Policy.Digest())
	assert.Equal(t, f.SFTBatches[1].Inputs, g.SFTBatches[1].Inputs)
	assert.Equal(t, f.RLPrompts, g.RLPrompts)
	require.Len(t, f.SFTBatches, 2)
	require.Len(t, f.PairBatches, 2)
	require.Len(t, f.RLPrompts, RLCheckIterations+2)
	assert.Len(t, f.GenPrompts[16], 16)

	dir := t.TempDir()
	require.NoError(t, f.Write(dir, []string{PolicyTrainStep}))
	var spec map[string]any
	b, err := os.ReadFile(filepath.Join(dir, SpecFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &spec))
	assert.Equal(t, float64(s.Model.Dim), spec["model"].(map[string]any)["dim"])
	assert.Equal(t, []any{PolicyTrainStep}, spec["stages"])
	r, err := os.Open(filepath.Join(dir, RewardInitFile))
	require.NoError(t, err)
	defer r.Close()
	rm, err := weights.Read(r)
	require.NoError(t, err)
	assert.Equal(t, f.Reward.Digest(), rm.Digest())
}
